"""The chapter's FastAPI inference service, written the way the chapter writes it.

Baseline (b) of ``bench_serve.py``: ``async def`` endpoints that call ``session.run`` on the
event loop, a per-element NaN/Inf check in a Pydantic validator, one Pydantic object per
batch instance. Model path from ``REFERENCE_MODEL`` (an .onnx file). Do not use this app:
it exists to be measured against.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException, status
from pydantic import BaseModel, Field, field_validator


class PredictionRequest(BaseModel):
    features: list[float] = Field(..., min_length=15, max_length=15)

    @field_validator("features")
    @classmethod
    def validate_no_nans(cls, v: list[float]) -> list[float]:
        if any(np.isnan(x) or np.isinf(x) for x in v):
            raise ValueError("Features must not contain NaN or Inf values")
        return v


class PredictionResponse(BaseModel):
    prediction: int
    probability: float = Field(..., ge=0.0, le=1.0)
    model_version: str


class BatchPredictionRequest(BaseModel):
    instances: list[PredictionRequest] = Field(..., min_length=1, max_length=1000)


class BatchPredictionResponse(BaseModel):
    predictions: list[PredictionResponse]
    batch_size: int


class HealthResponse(BaseModel):
    status: str
    model_loaded: bool
    model_version: str


class ModelState:
    session: ort.InferenceSession | None = None
    model_version: str = "unknown"
    input_name: str = ""

    @property
    def is_loaded(self) -> bool:
        return self.session is not None


model_state = ModelState()
MODEL_PATH = Path(os.environ.get("REFERENCE_MODEL", "model.onnx"))
MODEL_VERSION = "1.0.0"


@asynccontextmanager
async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
    model_state.session = ort.InferenceSession(str(MODEL_PATH), providers=["CPUExecutionProvider"])
    model_state.input_name = model_state.session.get_inputs()[0].name
    model_state.model_version = MODEL_VERSION
    yield
    model_state.session = None


app = FastAPI(title="ML Inference API", version=MODEL_VERSION, lifespan=lifespan)


@app.get("/health", response_model=HealthResponse)
async def health_check() -> HealthResponse:
    if not model_state.is_loaded:
        raise HTTPException(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, detail="Model not loaded")
    return HealthResponse(status="healthy", model_loaded=True, model_version=model_state.model_version)


@app.post("/predict", response_model=PredictionResponse)
async def predict(request: PredictionRequest) -> PredictionResponse:
    if not model_state.is_loaded:
        raise HTTPException(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, detail="Model not loaded")
    input_array = np.array([request.features], dtype=np.float32)
    try:
        results = model_state.session.run(None, {model_state.input_name: input_array})  # type: ignore[union-attr]
    except Exception as e:
        raise HTTPException(status_code=500, detail=f"Inference failed: {type(e).__name__}") from e
    prediction = int(results[0][0])
    probability = float(results[1][0][prediction])
    return PredictionResponse(
        prediction=prediction, probability=round(probability, 6), model_version=model_state.model_version
    )


@app.post("/predict/batch", response_model=BatchPredictionResponse)
async def predict_batch(request: BatchPredictionRequest) -> BatchPredictionResponse:
    if not model_state.is_loaded:
        raise HTTPException(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, detail="Model not loaded")
    input_array = np.array([inst.features for inst in request.instances], dtype=np.float32)
    try:
        results = model_state.session.run(None, {model_state.input_name: input_array})  # type: ignore[union-attr]
    except Exception as e:
        raise HTTPException(status_code=500, detail=f"Batch inference failed: {type(e).__name__}") from e
    predictions = []
    for i in range(len(request.instances)):
        pred = int(results[0][i])
        prob = float(results[1][i][pred])
        predictions.append(
            PredictionResponse(
                prediction=pred, probability=round(prob, 6), model_version=model_state.model_version
            )
        )
    return BatchPredictionResponse(predictions=predictions, batch_size=len(predictions))
