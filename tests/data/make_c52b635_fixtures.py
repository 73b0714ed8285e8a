"""Writes tests/data/distiller_c52b635_*.keras with tfkd at commit c52b635 (before terms)."""
import keras, numpy as np, tfkd
def model(name, seed):
    inp = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", name="features",
                            kernel_initializer=keras.initializers.GlorotUniform(seed))(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(h)
    return keras.Model(inp, out, name=name)
rng = np.random.default_rng(0)
x = rng.normal(size=(16, 6, 6, 1)).astype("float32"); y = rng.integers(0, 3, 16)
for kind in ("kd", "hint"):
    kw = dict(hint=tfkd.Hint(teacher_layer="features", student_layer="features", weight=0.5)) if kind == "hint" else {}
    d = tfkd.Distiller(student=model("student", 1), teachers=[model("t0", 3), model("t1", 5)],
                       alpha=0.3, temperature=2.0, seed=7, **kw)
    d.compile(optimizer="adam")
    d.fit(x, y, epochs=1, batch_size=8, verbose=0)
    d.save(f"tests/data/distiller_c52b635_{kind}.keras")
    np.save(f"/tmp/pred_{kind}.npy", d.student.predict(x, verbose=0))
    print(kind, [v.path for v in d.variables if "adapter" in v.path])
np.save("tests/data/distiller_c52b635_inputs.npy", x)
d = keras.saving.load_model("tests/data/distiller_c52b635_hint.keras")
np.savez("tests/data/distiller_c52b635_expected.npz", kd=np.load("/tmp/pred_kd.npy"),
         hint=np.load("/tmp/pred_hint.npy"), adapter_kernel=d.hint_adapter.kernel.numpy())
