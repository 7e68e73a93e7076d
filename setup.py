"""Installs tfdaseg: domain adaptation for semantic segmentation in TF2 / Keras 3."""

import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _requirements() -> list[str]:
  lines = (_HERE / "requirements.txt").read_text().splitlines()
  return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setuptools.setup(
    name="tfdaseg",
    version="0.1.0",
    description="Domain adaptation for semantic segmentation in TensorFlow 2 / Keras 3.",
    long_description=(_HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["tfdaseg", "tfdaseg.*", "tools", "tools.*"]),
    install_requires=_requirements(),
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3.5"]},
    entry_points={
        "console_scripts": [
            "tfdaseg-convert=tools.convert_to_tfrecord:run",
            "tfdaseg-train=tfdaseg.train:run",
            "tfdaseg-evaluate=tfdaseg.evaluate:run",
            "tfdaseg-export=tfdaseg.export:run",
            "tfdaseg-predict=tfdaseg.predict:run",
        ]
    },
)
