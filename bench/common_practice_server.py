"""The common practice, for comparison only (bench/service.py): frames JPEG-encoded at quality
75, pickled, POSTed, unpickled and decoded by the server.

NEVER part of the service: unpickling a request body lets anyone who reaches the port run
code on the server (reference.md section 3). Here it only ever reads our own loopback
benchmark traffic. Run: python bench/common_practice_server.py PORT
"""

import pickle
import sys

import cv2
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def score(request):
    body = await request.body()
    frames = pickle.loads(body)  # the unsafe part: what reward3d never does
    video = np.stack([cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR) for f in frames])
    return JSONResponse({"shape": list(video.shape), "checksum": int(video[..., 0].sum() % 1000003)})


app = Starlette(routes=[Route("/score", score, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
