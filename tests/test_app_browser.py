"""The app served by `streamlit run` on 127.0.0.1 and driven by a real headless Chromium."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

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


@pytest.fixture
def served_app(exported_model):
    port = free_port()
    env = {**os.environ, "AIIC_MODEL_DIR": str(exported_model)}
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
    yield url
    server.terminate()
    server.wait(timeout=20)


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


def test_upload_and_produce_result_in_chromium(served_app, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    image = tmp_path / "photo.png"
    synthetic_image("real", 64, np.random.default_rng(5)).save(image)
    wait = WebDriverWait(browser, 60)
    browser.get(served_app)
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
    metrics = wait.until(
        lambda driver: driver.find_elements(By.CSS_SELECTOR, "[data-testid=stMetricValue]")
    )
    verdict, p_score = (element.text for element in metrics[:2])
    # kept where a person can look at it: pytest's temporary folder, not the source tree
    assert browser.save_screenshot(str(tmp_path / "app_result.png"))
    assert verdict in ("Real", "AI-generated")
    assert 0.0 <= float(p_score) <= 1.0
