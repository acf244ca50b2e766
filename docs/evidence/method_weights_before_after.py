"""Train every generic method but lora 2 tasks (flip augmentation on, data scheduled by training_data) as a job does,
and print a hash of its losses, weights and method state: run under each checkout's PYTHONPATH with its schema, then
compare (the method-interface refactor must not change one byte). Output of both: method_weights_before_after.txt."""
import hashlib, io, sys, inspect
import torch
from clgrid.methods import GENERIC_METHODS, get_method, TaskData
from clgrid.train import fit_task, task_generator
from clgrid.models import build_model
from clgrid.data.transforms import make_augment
from clgrid.config.schema import load_schema

schema = load_schema(sys.argv[1])
blocks = schema["properties"]["method_params"]["properties"]
common = {k: v["default"] for k, v in schema["$defs"]["common_method_params"]["properties"].items()}
TRAIN = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "epochs": 2, "batch_size": 8}

def tasks():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 4, 4, generator=g)
    y = torch.arange(4).repeat_interleave(16)
    return [TaskData(t, x[y // 2 == t], y[y // 2 == t], [2 * t, 2 * t + 1]) for t in range(2)]

def digest(obj, h):
    if isinstance(obj, torch.Tensor):
        h.update(obj.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            h.update(str(k).encode()); digest(obj[k], h)
    elif isinstance(obj, (list, tuple)):
        for v in obj: digest(v, h)
    else:
        h.update(repr(obj).encode())

for name in sorted(GENERIC_METHODS):
    if name == "lora":
        continue
    params = {**common, **{k: v["default"] for k, v in blocks[name].get("properties", {}).items()}}
    if name == "dml":
        params["embedding_dim"] = 8
    if name == "ogd":
        params["ogd_samples"] = 8
    torch.manual_seed(0)
    model = build_model({"arch": "mlp", "hidden": [16]}, [1, 4, 4], 4)
    ts = tasks()
    h = hashlib.sha256()
    state = None
    for t in range(2):
        gen = task_generator(0, t)
        aug = make_augment({"augment": "flip"}, gen)
        cls = get_method(name)
        kwargs = {"augment": aug} if "augment" in inspect.signature(get_method("naive").__init__).parameters else {}
        method = cls(model, params, 4, **kwargs)
        if state is not None:
            method.load_state_dict(state)
        data = method.training_data(ts[t], lambda i: ts[i])
        losses = fit_task(model, method, data, TRAIN, gen, aug)
        state = method.state_dict()
        digest(losses, h)
    digest(model.state_dict(), h); digest(state, h)
    print(name, h.hexdigest()[:16])
