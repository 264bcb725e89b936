"""Streamlit app: is an image a real photograph or AI-generated? (`streamlit run app.py`)

The exported model (models/export/, or the folder in $AIIC_MODEL_DIR) scores uploads and image
URLs with the same preprocessing code as training; "Show where the model looks" draws each scored
image's occlusion map (pipeline.models.occlusion) over it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from pipeline.core.entry import message, quiet_tensorflow_logs
from pipeline.core.errors import AiicError
from pipeline.core.paths import EXPORT_DIR
from pipeline.data.images import INPUT_MODES, UnreadableImage, decode, shape_for_model
from pipeline.data.overlay import map_png
from pipeline.models.occlusion import Occlusion, occlusion_maps
from pipeline.serving.fetch import FetchRefused, fetch_image, shorten
from pipeline.serving.inference import (
    describe,
    forward,
    load_exported,
    reading_bands,
    score_images,
    verdict,
)

MODEL_DIR = Path(os.environ.get("AIIC_MODEL_DIR", EXPORT_DIR))
quiet_tensorflow_logs()  # before the model loads TensorFlow
VERDICTS = {"real": "Real", "ai": "AI-generated"}
MAP_BATCH = 32  # covered copies per forward pass


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

RESULT = "result"  # session state: the last Produce Result's images, scores and maps


def forget_result() -> None:
    """New inputs: the result shown is no longer theirs."""
    st.session_state.pop(RESULT, None)


upload_tab, url_tab = st.tabs(["Upload", "Image URL"])
with upload_tab:
    uploads = st.file_uploader(
        "Images (JPEG, PNG, WebP)",
        type=["jpg", "jpeg", "png", "webp"],
        accept_multiple_files=True,
        on_change=forget_result,
    )
    for upload in uploads or []:
        st.image(upload.getvalue(), caption=upload.name, width=200)
with url_tab:
    url = st.text_input(
        "Image URL", placeholder="https://example.org/picture.jpg", on_change=forget_result
    ).strip()


def produce(uploads: list, url: str) -> dict:
    """Every usable image (its name, the decoded image and the model's input), the scores, why
    each other input was not scored, and the image fetched from `url`."""
    named_images, problems, fetched = [], [], None
    for upload in uploads or []:
        try:
            named_images.append((upload.name, decode(upload.getvalue())))
        except UnreadableImage as error:
            problems.append(f"{upload.name}: not a usable image ({error.reason})")
    if url:
        try:
            fetched = fetch_image(url)
            named_images.append((url, fetched))
        except FetchRefused as error:
            problems.append(str(error))
    usable = []
    size, mode, min_size = info["input_size"], info["input_mode"], info.get("min_size", 0)
    for name, image in named_images:
        try:
            usable.append((name, image, shape_for_model(image, size, mode, name, min_size)))
        except UnreadableImage as error:  # the reasons prepare gives, e.g. too_small
            problems.append(f"{shorten(name)}: {error.reason}")
    return {
        "images": usable,
        "scores": score_images(model, [shaped for _, _, shaped in usable]),
        "problems": problems,
        "fetched": fetched,
        "asked": bool(named_images or problems),
    }


def show_maps(result: dict) -> None:
    """Each scored image with its occlusion map drawn over it, made once per result."""
    try:
        occlusion = Occlusion.of_model(info)
    except AiicError as error:
        st.error(message(error))
        return
    if "maps" not in result:
        with st.spinner("Covering each part of the image in turn..."):
            shaped = [shaped for _, _, shaped in result["images"]]
            heats = occlusion_maps(forward(model), shaped, occlusion, MAP_BATCH)[1]
            region = INPUT_MODES[info["input_mode"]].region
            result["maps"] = [
                map_png(
                    image,
                    heat,
                    region(image.width, image.height, info["input_size"]),
                    f"{VERDICTS[verdict(p_real, info['threshold'])]}, p-score {p_real:.3f}",
                )
                for (_, image, _), p_real, heat in zip(
                    result["images"], result["scores"], heats, strict=True
                )
            ]
    for (name, _, _), png in zip(result["images"], result["maps"], strict=True):
        st.image(png, caption=f"Where the model looks: {shorten(name)}")
    st.caption(occlusion.meaning)


if st.button("Produce Result", type="primary"):
    st.session_state[RESULT] = produce(uploads, url)

result = st.session_state.get(RESULT)
if result is not None:
    for problem in result["problems"]:
        st.error(problem)
    if not result["asked"]:
        st.warning("Upload an image or give an image URL first.")
    scores = result["scores"]
    if result["fetched"] is not None:
        st.image(result["fetched"], caption=url, width=200)
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
                    "image": [name for name, _, _ in result["images"]],
                    "p-score": scores.round(3),
                    "verdict": [VERDICTS[verdict(p, info["threshold"])] for p in scores],
                    "reading": [describe(p, info["threshold"]) for p in scores],
                }
            ),
            hide_index=True,
        )
    if len(scores) and st.toggle("Show where the model looks"):
        show_maps(result)

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
