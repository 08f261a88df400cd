"""Tools to check that the reward measures what it claims: corruptions of a clip at known
severities (``corruptions``) and posed captures with ground truth (``chessboard``)."""
