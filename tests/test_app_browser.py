"""The app served by `streamlit run` on 127.0.0.1 and driven by a real headless Chromium."""

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, synthetic_image

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.slow,  # a browser and a Streamlit server
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and shutil.which(CHROMEDRIVER)),
        reason="Debian's chromium and chromium-driver are not installed",
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def streamlit_app(model_dir):
    """`streamlit run app.py` on a free port of 127.0.0.1 with the model in `model_dir`."""
    port = free_port()
    env = {**os.environ, "AIIC_MODEL_DIR": str(model_dir)}
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "app.py"),
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail(f"streamlit did not start: {server.stdout.read()}")
            time.sleep(0.5)
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.fixture
def served_app(exported_model):
    with streamlit_app(exported_model) as url:
        yield url


@pytest.fixture
def served_detail_app(detail_model):
    with streamlit_app(detail_model) as url:
        yield url


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1200,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def produce_result(browser, url, image):
    """Upload `image` in the app at `url`, press Produce Result, and wait for the metrics."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(url)
    upload = wait.until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]"))
    )
    upload.send_keys(str(image))
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "img")))
    button = wait.until(
        expected_conditions.element_to_be_clickable(
            (By.XPATH, "//button[.//p[text()='Produce Result']]")
        )
    )
    button.click()
    return wait.until(
        lambda driver: driver.find_elements(By.CSS_SELECTOR, "[data-testid=stMetricValue]")
    )


def test_upload_and_produce_result_in_chromium(served_app, browser, tmp_path):
    image = tmp_path / "photo.png"
    synthetic_image("real", 64, np.random.default_rng(5)).save(image)
    metrics = produce_result(browser, served_app, image)
    verdict, p_score = (element.text for element in metrics[:2])
    # kept where a person can look at it: pytest's temporary folder, not the source tree
    assert browser.save_screenshot(str(tmp_path / "app_result.png"))
    assert verdict in ("Real", "AI-generated")
    assert 0.0 <= float(p_score) <= 1.0


def test_the_map_is_drawn_in_chromium(served_detail_app, browser, tmp_path):
    """The screenshot of the map shows the image in grey with the map's blue cells over its
    top-left quarter, where the detail model looks, nothing blue elsewhere above the colour
    scale, and the scale with its red ("more AI-generated") and blue ("more real") ends."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = tmp_path / "detailed.png"
    synthetic_image("ai", 32, np.random.default_rng(5)).save(image)
    produce_result(browser, served_detail_app, image)
    wait = WebDriverWait(browser, 60)
    option = wait.until(
        lambda driver: driver.find_element(
            By.XPATH, "//label[.//p[text()='Show where the model looks']]"
        )
    )
    option.click()
    shown = wait.until(
        lambda driver: [
            frame
            for frame in driver.find_elements(By.CSS_SELECTOR, "[data-testid=stImage]")
            if "Where the model looks" in frame.text
        ]
    )
    map_image = shown[0].find_element(By.TAG_NAME, "img")
    # laid out at its width before its pixels arrive: a loaded machine screenshots it 0 px high
    wait.until(lambda driver: map_image.size["width"] > 200)
    wait.until(
        lambda driver: driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalHeight > 0", map_image
        )
    )
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", map_image)
    screenshot = Image.open(io.BytesIO(map_image.screenshot_as_png)).convert("RGB")
    assert abs(screenshot.height - map_image.size["height"]) <= 2  # all of it, not a part
    screenshot.save(tmp_path / "map.png")  # kept where a person can look at it
    pixels = np.asarray(screenshot).astype(int)
    assert pixels.std() > 20  # not a blank frame
    red, blue = pixels[..., 0], pixels[..., 2]
    strongly_blue, strongly_red = blue - red > 60, red - blue > 60
    height, width = strongly_blue.shape
    upper = strongly_blue[: height // 2]  # the image; the colour scale is at the bottom
    left, right = upper[:, : width // 2], upper[:, width // 2 :]
    assert left.mean() > 0.05, left.mean()  # the map's cells over the top-left quarter
    assert right.mean() < left.mean() / 10  # and none where the model does not look
    assert not strongly_red[: height // 2].any()  # nothing pushes this image towards AI
    lower = slice(3 * height // 4, height)  # the colour scale
    assert strongly_blue[lower].any() and strongly_red[lower].any()
