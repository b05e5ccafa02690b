"""Image upstreams that are not OpenAI's: Workers AI image models and the Hugging Face router, plus
tiny valid JPEG, GIF and WebP files (the PNG is `openai.TINY_PNG`).

Shapes follow shared/provider-formats/05-cloudflare-workers-ai.md (flux answers base64 JPEG in the
v4 envelope, stable-diffusion models raw PNG) and Hugging Face's text-to-image task (raw bytes)::

    with FakeCloudflareImages() as cf, FakeHuggingFace() as hf:
        cf.push_error("internal")                # the next run answers the 500 envelope
        hf.push("inference", Behavior(body=b"<html>...</html>", headers={"Content-Type": "text/html"}))
        ...  # point the proxy at cf.run_url (model @cf/...) or hf.model_url(...)
"""

from __future__ import annotations

import base64
import re
import struct

from . import cloudflare as cloudflare_fake
from .cloudflare import FakeCloudflare
from .openai import TINY_PNG
from .server import Behavior, FakeServer, Recorded, Route

__all__ = [
    "FLUX",
    "HF_TOKEN",
    "SDXL",
    "TINY_GIF",
    "TINY_JPEG",
    "TINY_PNG",
    "TINY_WEBP",
    "FakeCloudflareImages",
    "FakeHuggingFace",
    "flux_answer",
    "tiny_jpeg",
]

FLUX = "@cf/black-forest-labs/flux-1-schnell"
SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
HF_TOKEN = "hf_fake_upstream_token"
HF_MODEL = "black-forest-labs/FLUX.1-schnell"


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", 0xFF00 | marker, len(payload) + 2) + payload


def tiny_jpeg(gray: int = 0) -> bytes:
    """A valid baseline 8x8 grayscale JPEG of one shade (DC offset `gray` in -15..15, 0 = mid gray):
    quantisation 1, one-symbol Huffman tables, a single block. 159 bytes."""
    category = 0 if gray == 0 else abs(gray).bit_length()
    bits = "0"  # the DC table's one code, for `category`
    if category:
        value = gray if gray > 0 else gray + (1 << category) - 1
        bits += format(value, f"0{category}b")
    bits += "0"  # the AC table's one code: end of block
    bits += "1" * (-len(bits) % 8)
    scan = int(bits, 2).to_bytes(len(bits) // 8, "big").replace(b"\xff", b"\xff\x00")
    one_code = bytes([1] + [0] * 15)
    return (
        b"\xff\xd8"
        + _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
        + _segment(0xDB, b"\x00" + b"\x01" * 64)
        + _segment(0xC0, b"\x08\x00\x08\x00\x08\x01\x01\x11\x00")
        + _segment(0xC4, b"\x00" + one_code + bytes([category]))
        + _segment(0xC4, b"\x10" + one_code + b"\x00")
        + _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + scan
        + b"\xff\xd9"
    )


TINY_JPEG = tiny_jpeg()
# the classic 1x1 transparent GIF and 1x1 lossless WebP
TINY_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
TINY_WEBP = (
    b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
)


def flux_answer(image: bytes = TINY_JPEG) -> dict:
    """What flux-1-schnell answers: the image as base64 in `result.image`."""
    return cloudflare_fake.envelope({"image": base64.b64encode(image).decode()})


class FakeCloudflareImages(FakeCloudflare):
    """FakeCloudflare whose image models answer as documented on `run` and `gateway`: models named
    `…flux…` the JSON base64 JPEG, `…stable-diffusion…` raw PNG bytes (`image/png`); any other
    model answers as a text model. A request without `prompt` gets the 400 `bad_input` envelope."""

    def _run(self, req: Recorded) -> Behavior:
        model = req.params.get("model", "")
        if "flux" not in model and "stable-diffusion" not in model:
            return super()._run(req)
        if not (req.json or {}).get("prompt"):
            status, code, message = cloudflare_fake.ERRORS["bad_input"]
            return Behavior(status=status, json=cloudflare_fake.error_body(code, message))
        if "flux" in model:
            return Behavior(json=flux_answer())
        return Behavior(body=TINY_PNG, headers={"Content-Type": "image/png"})

    def push_image(self, image: bytes, route: str = "run", content_type: str = "image/png") -> None:
        """Answer the next request with raw bytes (any bytes: also for non-image answers)."""
        self.push(route, Behavior(body=image, headers={"Content-Type": content_type}))


class FakeHuggingFace(FakeServer):
    """The Hugging Face router's hf-inference text-to-image: POST `/hf-inference/models/{org}/{model}`
    with `{"inputs": prompt}` -> raw JPEG (`image/jpeg`). Wants `Authorization: Bearer <token>`
    (401 `{"error": ...}` otherwise); no `inputs` is a 400."""

    def __init__(self, token: str = HF_TOKEN) -> None:
        super().__init__()
        self.token = token
        self.add_route(
            "inference", "POST", re.compile(r"/hf-inference/models/(?P<model>.+)"), self._inference
        )

    def model_url(self, model: str = HF_MODEL) -> str:
        return f"{self.url}/hf-inference/models/{model}"

    def before(self, req: Recorded, route: Route) -> Behavior | None:
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return Behavior(status=401, json={"error": "Invalid credentials in Authorization header"})
        return None

    @staticmethod
    def _inference(req: Recorded) -> Behavior:
        body = req.json if isinstance(req.json, dict) else {}
        if not isinstance(body.get("inputs"), str):
            return Behavior(status=400, json={"error": "Input should be a valid string: inputs"})
        return Behavior(body=TINY_JPEG, headers={"Content-Type": "image/jpeg"})
