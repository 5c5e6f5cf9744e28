"""The Space in a real headless Chromium: upload an example, see the verdict and Grad-CAM appear, screenshot."""

import os
import shutil
from pathlib import Path

import pytest
from test_space import SPACE, free_port, load_app, save_tiny_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1400",
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian packages chromium and chromium-driver"),
]


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    # An explicit driver path: selenium-manager never tries to download one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_an_example_and_see_the_result(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    save_tiny_model(tmp_path / "model", threshold=0.4)
    demo = load_app().build_demo(str(tmp_path / "model"))
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, ssr_mode=False, quiet=True)
    try:
        browser.get(demo.local_url)
        wait = WebDriverWait(browser, 60)
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Research demo — not for diagnosis"))
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
        example = sorted((SPACE / "examples").glob("meningioma_*"))[0]
        upload.send_keys(str(example))
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), example.name))
        wait.until(ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Classify']"))).click()
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Model output:"))
        wait.until(lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "img[src*='image.png']")) >= 2)

        body = browser.find_element(By.TAG_NAME, "body").text
        assert "P(tumor) =" in body and ("**" not in body)  # rendered Markdown, not raw text
        assert "no_tumor" in body and "tumor" in body  # the probabilities label
        screenshot = tmp_path / "space.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
        if os.environ.get("HF_MRI_SCREENSHOT_DIR"):  # keep a copy to look at (CI artefact)
            Path(os.environ["HF_MRI_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
            shutil.copy2(screenshot, Path(os.environ["HF_MRI_SCREENSHOT_DIR"]) / "space.png")
    finally:
        demo.close()
