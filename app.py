"""Streamlit app: is an image a real photograph or AI-generated? (`streamlit run app.py`)

The exported model (models/export/, or the folder in $AIIC_MODEL_DIR) scores uploads and image
URLs with the same preprocessing code as training.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from pipeline.entry import message, quiet_tensorflow_logs
from pipeline.errors import AiicError
from pipeline.fetch import FetchRefused, fetch_image, shorten
from pipeline.images import UnreadableImage, decode, shape_for_model
from pipeline.inference import (
    describe,
    load_exported,
    reading_bands,
    score_images,
    verdict,
)
from pipeline.paths import EXPORT_DIR

MODEL_DIR = Path(os.environ.get("AIIC_MODEL_DIR", EXPORT_DIR))
quiet_tensorflow_logs()  # before the model loads TensorFlow
VERDICTS = {"real": "Real", "ai": "AI-generated"}


@st.cache_resource
def model_and_info(model_dir: str) -> tuple:
    return load_exported(Path(model_dir))


st.set_page_config(page_title="Real or AI-generated?", page_icon=":mag:")
st.title("Real photograph or AI-generated?")

try:
    model, info = model_and_info(str(MODEL_DIR))
except AiicError as error:
    st.error(f"{message(error)} Then reload this page.")
    st.stop()

upload_tab, url_tab = st.tabs(["Upload", "Image URL"])
with upload_tab:
    uploads = st.file_uploader(
        "Images (JPEG, PNG, WebP)", type=["jpg", "jpeg", "png", "webp"], accept_multiple_files=True
    )
    for upload in uploads or []:
        st.image(upload.getvalue(), caption=upload.name, width=200)
with url_tab:
    url = st.text_input("Image URL", placeholder="https://example.org/picture.jpg").strip()

if st.button("Produce Result", type="primary"):
    named_images, problems = [], []
    for upload in uploads or []:
        try:
            named_images.append((upload.name, decode(upload.getvalue())))
        except UnreadableImage as error:
            problems.append(f"{upload.name}: not a usable image ({error.reason})")
    if url:
        try:
            image = fetch_image(url)
            st.image(image, caption=url, width=200)
            named_images.append((url, image))
        except FetchRefused as error:
            problems.append(str(error))
    inputs, names = [], []
    for name, image in named_images:
        try:
            size, mode, min_size = info["input_size"], info["input_mode"], info.get("min_size", 0)
            inputs.append(shape_for_model(image, size, mode, name, min_size))
            names.append(name)
        except UnreadableImage as error:  # the reasons prepare gives, e.g. too_small
            problems.append(f"{shorten(name)}: {error.reason}")
    for problem in problems:
        st.error(problem)
    if not named_images and not problems:
        st.warning("Upload an image or give an image URL first.")
    scores = score_images(model, inputs)
    if len(scores) == 1:
        p_real = float(scores[0])
        label = VERDICTS[verdict(p_real, info["threshold"])]
        left, right = st.columns(2)
        left.metric("Verdict", label)
        right.metric("p-score (probability the image is real)", f"{p_real:.3f}")
        st.write(f"Reading: **{describe(p_real, info['threshold'])}**.")
    elif len(scores) > 1:
        st.dataframe(
            pd.DataFrame(
                {
                    "image": names,
                    "p-score": scores.round(3),
                    "verdict": [VERDICTS[verdict(p, info["threshold"])] for p in scores],
                    "reading": [describe(p, info["threshold"]) for p in scores],
                }
            ),
            hide_index=True,
        )

with st.expander("How to read the p-score, and this model's test results"):
    st.write(
        f"The p-score is the model's probability that the image is a real photograph. The verdict "
        f"is *Real* at or above the threshold **{info['threshold']}**, *AI-generated* below it."
    )
    st.table(pd.DataFrame(reading_bands(info["threshold"]), columns=["p-score", "reading"]))
    if not info.get("calibrated", False):
        st.caption("These scores are not calibrated: treat them as a ranking, not a frequency.")
    metrics = info.get("test_metrics", {})
    shown = ("images", "accuracy", "balanced_accuracy", "real_accuracy", "ai_accuracy")
    shown += ("roc_auc", "average_precision", "ece", "brier")
    summary = {key: metrics[key] for key in shown if key in metrics}
    st.write(f"Backbone **{info['backbone']}**, test split:", summary)
