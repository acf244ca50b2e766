from pathlib import Path

import pytest

# /work/shared/data sits beside the repository checkout; CLGRID_SHARED_DATA points elsewhere.
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: decodes a whole real dataset (seconds); deselect with -m 'not slow'")


@pytest.fixture
def shared_data():
    """The folder of real offline datasets (mnist.npz, cifar10_jpeg.npz, ...); skips the test where it is absent."""
    import os

    folder = Path(os.environ.get("CLGRID_SHARED_DATA", SHARED_DATA))
    if not folder.is_dir():
        pytest.skip(f"shared data folder '{folder}' is absent")
    return folder
