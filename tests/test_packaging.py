"""The package's metadata agrees with itself and with the code: LICENSE is the license pyproject declares,
CITATION.cff cites this software and the paper of its method, and every third-party module the code
imports is a dependency (or the extra that the code asks for when it is missing)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# import name -> distribution, where they differ; torch.utils.tensorboard needs the tensorboard package
DISTRIBUTIONS = {
    "yaml": "pyyaml",
    "PIL": "pillow",
    "torch.utils.tensorboard": "tensorboard",
    "cut_pursuit_py": "cut-pursuit-py",
}
EXTRAS = {"laspy": "las", "wandb": "wandb"}  # imported where needed, with a message naming the install


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower() for requirement in requirements}


def imported_distributions() -> set[str]:
    """The third-party distributions that src/dsp3d imports, top-level or inside functions."""
    found = set()
    for path in (ROOT / "src" / "dsp3d").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "dsp3d":
                    continue
                key = "torch.utils.tensorboard" if module.startswith("torch.utils.tensorboard") else top
                found.add(DISTRIBUTIONS.get(key, key))
    return found


def test_license_file_is_the_license_pyproject_declares():
    assert PROJECT["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the dsp3d authors\n")
    assert "Permission is hereby granted, free of charge, to any person obtaining a copy" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


def test_citation_cites_this_software_and_the_paper_of_its_method():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["title"] == PROJECT["name"]
    assert cff["version"] == PROJECT["version"] and cff["license"] == PROJECT["license"]["text"]
    assert str(cff["date-released"]) == "2026-12-05"
    assert cff["authors"] == [{"name": "the dsp3d authors"}]
    (paper,) = cff["references"]
    assert paper["type"] == "article"
    assert paper["title"] == (
        "Dense Supervision Propagation for Weakly Supervised Semantic Segmentation on 3D Point Clouds"
    )
    assert [(a["given-names"], a["family-names"]) for a in paper["authors"]] == [
        ("Jiacheng", "Wei"),
        ("Guosheng", "Lin"),
        ("Kim-Hui", "Yap"),
        ("Fayao", "Liu"),
        ("Tzu-Yi", "Hung"),
    ]
    assert paper["journal"] == "IEEE Transactions on Circuits and Systems for Video Technology"
    assert paper["year"] == 2024 and paper["doi"] == "10.1109/TCSVT.2023.3336323"
    assert paper["url"] == "https://arxiv.org/abs/2107.11267"


def test_every_imported_package_is_a_dependency_or_its_extra():
    required = requirement_names(PROJECT["dependencies"])
    imported = imported_distributions()
    assert imported - set(EXTRAS) == required
    for module, extra in EXTRAS.items():
        assert module in imported and module in requirement_names(PROJECT["optional-dependencies"][extra])
    # both the plotting commands and the default tracker are part of every install
    assert {"matplotlib", "tensorboard", "rich"} <= required
