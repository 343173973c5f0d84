"""MLServer's side of `make bench-serve`: a custom runtime that answers with our own nn.Inference, so that
the benchmark compares servers, not models. MLServer loads it from its own virtual environment."""

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from fashion_mlp import checkpoint


class FashionRuntime(MLModel):
    async def load(self) -> bool:
        self.inference = checkpoint.load(self.settings.parameters.uri).inference()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        pixels = NumpyCodec.decode_input(payload.inputs[0]).reshape(-1, 784).astype(np.float32)
        probabilities = self.inference.predict_proba(pixels)
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output("probabilities", probabilities),
                NumpyCodec.encode_output("label", probabilities.argmax(axis=1).astype(np.int64)),
            ],
        )
