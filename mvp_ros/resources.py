"""Files shipped with the package (config/, models/, launch/), found the same way from a source
checkout or pip install -e (the repository) and from a colcon install (share/mvp_ros)."""
from __future__ import annotations

from pathlib import Path

PACKAGE = "mvp_ros"


def package_file(*parts: str) -> Path:
    """e.g. package_file("config", "panda_sim_contract.yaml"); the source tree's path when neither exists."""
    here = Path(__file__).resolve()
    source = here.parents[1].joinpath(*parts)
    # colcon: <prefix>/lib/python3.X/site-packages/mvp_ros/resources.py, data in <prefix>/share/mvp_ros
    installed = here.parents[4].joinpath("share", PACKAGE, *parts) if len(here.parents) > 4 else source
    return next((path for path in (source, installed) if path.exists()), source)
