"""Our Qwen3-VL judge inputs against transformers' own ``Qwen3VLProcessor`` + chat template.

Same images, same rubric text, the tests' tokenizer (Qwen's special tokens, built locally) and
image processor: input ids, attention mask, image-token count and placement, ``pixel_values``,
``image_grid_thw`` and ``mm_token_type_ids`` must be what the processor produces.

The chat template is Qwen's ChatML layout for a system turn, a user turn of one image then
text, and the generation prompt (``<|im_start|>role\\n...<|im_end|>\\n``, an image as
``<|vision_start|><|image_pad|><|vision_end|>``), written here in Jinja because the
checkpoint's own chat_template.json cannot be downloaded on this machine. The processor's
video processor needs torchvision, which does not import beside this torch: its class check is
skipped for that one argument (no video is ever passed).
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from service.pipeline.terms.vlm_judge import VLMJudge, load_rubrics  # noqa: E402
from tests.tiny_models import save_tiny_qwen3_vl  # noqa: E402

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    torch.set_num_threads(1)
    directory = save_tiny_qwen3_vl(tmp_path_factory.mktemp("qwen3_vl"))
    return VLMJudge._load(str(directory), torch.device("cpu"))


@pytest.fixture(scope="module")
def processor(judge):
    from transformers import Qwen3VLProcessor
    from transformers.processing_utils import ProcessorMixin

    real_check = ProcessorMixin.check_argument_for_proper_class

    def check(self, name, argument):
        return None if name == "video_processor" else real_check(self, name, argument)

    with mock.patch.object(ProcessorMixin, "check_argument_for_proper_class", check):
        return Qwen3VLProcessor(image_processor=judge.image_processor, tokenizer=judge.tokenizer,
                                video_processor=None, chat_template=QWEN_CHAT_TEMPLATE)  # fmt: skip


def messages(rubric, prompt):
    # The user's question as our rubric states it (prompt clause included, sanitised).
    question = rubric.text(prompt).split("<|vision_end|>", 1)[1].split("<|im_end|>", 1)[0]
    return [{"role": "system", "content": [{"type": "text", "text": rubric.system}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]  # fmt: skip


def test_judge_inputs_equal_the_qwen3_vl_processor_with_its_chat_template(judge, processor):
    rng = np.random.default_rng(0)
    # Different sizes and aspects, so the image-token counts differ and padding shows.
    images_uint8 = [rng.integers(0, 256, size, dtype=np.uint8) for size in ((40, 70, 3), (96, 64, 3), (33, 33, 3))]
    images = [torch.from_numpy(image).float() / 255 for image in images_uint8]
    rubrics = load_rubrics()
    cases = [(rubrics["plausibility"], [None, None, None]),
             (rubrics["quality"], ["a red barn in a field", None, "the camera <|im_end|> pans"])]  # fmt: skip
    for rubric, prompts in cases:
        ours = judge.build_inputs(images, [rubric.text(p) for p in prompts])
        texts = [processor.apply_chat_template(messages(rubric, p), add_generation_prompt=True, tokenize=False)
                 + rubric.answer_prefix for p in prompts]  # fmt: skip
        assert texts == [rubric.text(p) for p in prompts]  # the same chat text, before expansion
        from PIL import Image

        processor.tokenizer.padding_side = "left"  # our judge's batching (last position shared)
        theirs = processor(text=texts, images=[Image.fromarray(i) for i in images_uint8],
                           return_tensors="pt", padding=True, return_mm_token_type_ids=True)  # fmt: skip
        assert torch.equal(ours["input_ids"], theirs["input_ids"])
        assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
        assert torch.equal(ours["image_grid_thw"], theirs["image_grid_thw"])
        assert torch.equal(ours["mm_token_type_ids"], theirs["mm_token_type_ids"].long())
        # uint8 -> /255 on our side, x * (1/255) in the processor: float rounding only.
        torch.testing.assert_close(ours["pixel_values"], theirs["pixel_values"].float(), rtol=0, atol=1e-6)
        # Image tokens: as many as merged patches, contiguous, right after <|vision_start|>.
        start_id = judge.tokenizer.convert_tokens_to_ids("<|vision_start|>")
        for row, grid in zip(ours["input_ids"], ours["image_grid_thw"]):
            positions = (row == judge.image_token_id).nonzero().flatten()
            assert len(positions) == int(grid.prod()) // judge.merge_size**2
            assert torch.equal(positions, torch.arange(positions[0], positions[0] + len(positions)))
            assert int(row[positions[0] - 1]) == start_id
