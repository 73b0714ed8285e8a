import glob

from setuptools import find_packages, setup

setup(
    name="tfkd",
    version="0.1.0",
    description="Ensembles, knowledge distillation and self-distillation for Keras 3 / TensorFlow",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tfkd", "tfkd.*"]),
    # The recipes, so that `tfkd --recipe=NAME` finds them in an installed package too
    # (tfkd.cli.recipe_dirs looks in <prefix>/share/tfkd/flags).
    data_files=[("share/tfkd/flags", sorted(glob.glob("flags/*.flags")))],
    install_requires=[
        "tensorflow>=2.16",
        # Teachers are loaded from third-party .keras files by design, so the floor is past
        # the published safe_mode bypasses of keras.saving.load_model: CVE-2025-8747 and
        # CVE-2025-9906 (Keras < 3.11.0), CVE-2025-49655 (3.11.0-3.11.2) and CVE-2026-1462
        # (fixed in 3.12.1 and 3.14.0; no 3.13 release is listed as fixed, hence 3.14.0).
        "keras>=3.14.0",
        "tensorflow-datasets>=4.9",
        # TFDS's download_and_prepare (and `tfds build`) imports it, but tensorflow-datasets
        # 4.9.10 does not install it: without it, preparing any TFDS set fails with
        # ModuleNotFoundError (tests/test_tfds.py).
        "importlib_resources",
        "keras-tuner>=1.4.7",
        "absl-py>=2.0",
        # `import tfkd` registers its Keras classes through a post-import hook of wrapt's
        # (tensorflow depends on it too, but tfkd imports it itself).
        "wrapt>=1.14",
        # The Keras TensorBoard callback needs it; tensorflow no longer pulls it in.
        "tensorboard>=2.16",
        "numpy>=1.26",
        "matplotlib>=3.7",
        # Embedded data sets: digits ships with scikit-learn; MNIST-1D is generated offline.
        "scikit-learn>=1.3",
        # The analysis's intervals and paired tests (binomtest's proportion_ci, bootstrap).
        "scipy>=1.9",
        "mnist1d>=0.0.2",
    ],
    # pytest-xdist: the suite runs in two worker processes (pytest.ini); >= 3.2 for worksteal.
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3.2"]},
    entry_points={"console_scripts": ["tfkd = tfkd.__main__:main"]},
)
