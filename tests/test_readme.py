"""The README's library example runs as written."""

import keras
import numpy as np

from helpers.examples import markdown_example


def test_distill_example_runs_and_student_is_good(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(markdown_example("README.md", "distill"), "README.md example", "exec"), namespace)
    data, distiller = namespace["data"], namespace["distiller"]
    assert len(distiller.teachers.members) == 3
    result = distiller.evaluate(data.x_test, data.y_test, return_dict=True, verbose=0)
    assert result["accuracy"] > 0.9
    loaded = keras.saving.load_model(tmp_path / "student.keras")
    np.testing.assert_allclose(loaded.predict(data.x_test[:32], verbose=0),
                               namespace["student"].predict(data.x_test[:32], verbose=0),
                               rtol=1e-6)
