"""Deep metric learning: an embedding trained with a metric loss, classified by its nearest training embeddings.

Losses come from pytorch-metric-learning (Musgrave et al. 2020, "A Metric Learning Reality Check"):

- ``triplet``: max(d(a, p) − d(a, n) + margin, 0) over mined triplets (Schroff et al. 2015). ``miner: epshn`` is
  easy-positive semi-hard-negative mining (Xuan et al. 2020: each anchor's *closest* positive, then the hardest
  negative still farther than it; ``BatchEasyHardMiner``), ``semihard`` and ``hard`` are FaceNet's triplet
  types (``TripletMarginMiner``), ``all`` every valid triplet.
- ``ntxent``: NT-Xent / InfoNCE over the mined pairs (Sohn 2016; Chen et al. 2020), −log(exp(s_ap/τ) / (exp(s_ap/τ)
  + Σ_n exp(s_an/τ))) with τ = 0.1: the loss the DML-for-Classification study trains its "EPSHN" rows with (its
  notebooks: ``NTXentLoss(temperature=0.1)`` on ``BatchEasyHardMiner(pos_strategy="easy", neg_strategy="semihard")``),
  which is also Xuan et al. 2020's EPSHN, a softmax over one easy positive and the semi-hard negatives.
- ``proxy_nca`` (Movshovitz-Attias et al. 2017), ``arcface`` (Deng et al. 2019, additive angular margin in
  degrees), ``subcenter_arcface`` (Deng et al. 2020, ``sub_centers`` per class): each with learnable class
  proxies, stepped by the loop's optimizer with the embedding.

The embedding is ``head(backbone features)``, a linear layer to ``embedding_dim`` with optional 1-D batch norm or a
skip connection (``embedding_skip: true`` adds the features; ``gated`` adds a gated residual layer on the embedding,
the study's "skip connection head"), L2-normalised when ``normalize`` (always for ``cosine``). It lives in the method (its state
travels in the checkpoint's method state); the model's classifier head is left untrained.

Classification is k-NN through FAISS (``clgrid.analysis.knn``): after each task the new classes' training
embeddings join the index, as computed at that moment (old training data is gone in continual learning, so older
entries are not re-embedded). ``train_tasks: first`` trains on the first task only and afterwards only grows the
index: what "adding classes without retraining" costs. Batches are class-balanced (``m_per_class`` samples of each
class) as these losses need pairs of the same class in a batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import nn

from clgrid.methods.base import Method, TaskData, register

LOSSES = ("triplet", "proxy_nca", "arcface", "subcenter_arcface", "ntxent")
MINERS = ("epshn", "semihard", "hard", "all")
NTXENT_TEMPERATURE = 0.1  # the study's (DML-for-Classification notebooks: config['temperature'])
GATED_SKIP_DROPOUT = 0.1  # the study's skip head (its notebook: config['skip_dropout'])


class EmbeddingHead(nn.Module):
    """features → embedding: linear, then optional BatchNorm1d; ``skip=True`` adds the features themselves (needs
    equal dimensions), so the embedding starts as the backbone's features. ``skip="gated"`` then adds a gated
    residual layer on the embedding e (the DML-for-Classification study's "skip connection head"):
    e + σ(g) ⊙ W·dropout(e), g a learned vector that starts at 0 (σ = 1/2; the study's is uninitialised memory),
    dropout 0.1. Without it the module, its parameters and its random draws are those of before."""

    def __init__(self, feature_dim: int, embedding_dim: int, batch_norm: bool = False, skip: bool | str = False):
        super().__init__()
        if skip not in (False, True, "gated"):
            raise ValueError(f"embedding_skip must be false, true or 'gated', got {skip!r}")
        if skip is True and feature_dim != embedding_dim:
            raise ValueError(f"embedding_skip needs embedding_dim equal to the backbone's feature dimension "
                             f"({feature_dim}), got embedding_dim {embedding_dim}")
        self.linear = nn.Linear(feature_dim, embedding_dim)
        self.bn = nn.BatchNorm1d(embedding_dim) if batch_norm else nn.Identity()
        self.skip = skip
        if skip == "gated":
            self.gated = nn.Linear(embedding_dim, embedding_dim)
            self.gate = nn.Parameter(torch.zeros(embedding_dim))
            self.gated_dropout = nn.Dropout(GATED_SKIP_DROPOUT)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = features.flatten(1)
        out = self.bn(self.linear(features))
        if self.skip == "gated":
            return out + torch.sigmoid(self.gate) * self.gated(self.gated_dropout(out))
        return out + features if self.skip else out


def class_balanced_order(y: torch.Tensor, m: int, generator: torch.Generator) -> torch.Tensor:
    """An epoch's order made of groups of ``m`` samples of one class, the groups shuffled: a batch of ``B`` holds
    about ``B / m`` classes with ``m`` samples each. Each class's samples are shuffled and, where their count is
    not a multiple of ``m``, its first samples repeated to fill its last group. Drawn with the task's generator
    (pytorch-metric-learning's ``MPerClassSampler`` draws from NumPy's global state instead), so runs reproduce
    and resume exactly."""
    labels = y.cpu()
    groups: list[torch.Tensor] = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        pad = (-len(members)) % m
        if pad:
            members = torch.cat([members, members.repeat(-(-pad // len(members)))[:pad]])
        groups += list(members.split(m))
    if not groups:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()])


def make_loss(params: dict[str, Any], n_classes: int, embedding_dim: int) -> tuple[nn.Module, Any]:
    """The pytorch-metric-learning loss (and miner, for triplets) the parameters name."""
    from pytorch_metric_learning import distances, losses, miners

    name, distance_name = params["loss"], params["distance"]
    if name not in LOSSES:
        raise ValueError(f"unknown metric loss '{name}'; valid: {', '.join(LOSSES)}")
    if distance_name == "cosine":
        distance = distances.CosineSimilarity()
    else:
        distance = distances.LpDistance(normalize_embeddings=bool(params["normalize"]))
    if name in ("triplet", "ntxent"):
        margin = 0.2 if params["margin"] is None else float(params["margin"])
        loss = (losses.TripletMarginLoss(margin=margin, distance=distance) if name == "triplet"
                else losses.NTXentLoss(temperature=NTXENT_TEMPERATURE, distance=distance))
        miner_name = params["miner"]
        if miner_name not in MINERS:
            raise ValueError(f"unknown triplet miner '{miner_name}'; valid: {', '.join(MINERS)}")
        if miner_name == "epshn":
            miner = miners.BatchEasyHardMiner(pos_strategy="easy", neg_strategy="semihard", distance=distance)
        else:
            miner = miners.TripletMarginMiner(margin=margin, type_of_triplets=miner_name, distance=distance)
        return loss, miner
    if name == "proxy_nca":
        return losses.ProxyNCALoss(num_classes=n_classes, embedding_size=embedding_dim), None
    margin = 28.6 if params["margin"] is None else float(params["margin"])  # degrees, ArcFace's 0.5 rad
    if name == "arcface":
        return losses.ArcFaceLoss(num_classes=n_classes, embedding_size=embedding_dim, margin=margin,
                                  scale=float(params["scale"])), None
    return losses.SubCenterArcFaceLoss(num_classes=n_classes, embedding_size=embedding_dim, margin=margin,
                                       scale=float(params["scale"]), sub_centers=int(params["sub_centers"])), None


@register("dml")
class DeepMetricLearning(Method):
    PARAMS: dict[str, dict[str, Any]] = {
        "loss": {
            "description": ("triplet (Schroff et al. 2015), proxy_nca (Movshovitz-Attias et al. 2017), arcface (Deng et"
                            " al. 2019), subcenter_arcface (Deng et al. 2020), ntxent (NT-Xent over the mined pairs, "
                            "temperature 0.1; the DML-for-Classification study's EPSHN loss)"),
            "enum": ["triplet", "proxy_nca", "arcface", "subcenter_arcface", "ntxent"], "default": "triplet",
        },
        "miner": {
            "description": ("triplet mining: epshn (easy positive, semi-hard negative; Xuan et al. 2020), semihard, "
                            "hard, all"),
            "enum": ["epshn", "semihard", "hard", "all"], "default": "epshn",
        },
        "distance": {
            "description": ("euclidean (L2, on normalised embeddings when normalize) or cosine; the loss and the k-NN "
                            "index use it"),
            "enum": ["euclidean", "cosine"], "default": "euclidean",
        },
        "normalize": {"description": "L2-normalise embeddings (always for cosine)", "type": "boolean", "default": True},
        "margin": {
            "description": "triplet margin (null: 0.2), or ArcFace's angular margin in degrees (null: 28.6 = 0.5 rad)",
            "type": ["number", "null"], "minimum": 0, "default": None,
        },
        "scale": {"description": "ArcFace's logit scale s", "type": "number", "exclusiveMinimum": 0, "default": 64.0},
        "sub_centers": {
            "description": "sub-centres per class (subcenter_arcface)",
            "type": "integer", "minimum": 1, "default": 3,
        },
        "embedding_dim": {"description": "embedding dimension", "type": "integer", "minimum": 1, "default": 512},
        "embedding_bn": {
            "description": "1-D batch norm after the embedding layer",
            "type": "boolean", "default": False,
        },
        "embedding_skip": {
            "description": ("true: add the backbone's features to the embedding (needs embedding_dim = feature "
                            "dimension); gated: add a gated residual layer on the embedding (the DML-for-"
                            "Classification study's skip connection head)"),
            "enum": [False, True, "gated"], "default": False,
        },
        "m_per_class": {
            "description": "class-balanced batches of m samples per class (0 = plain shuffling)",
            "type": "integer", "minimum": 0, "default": 4,
        },
        "knn_k": {
            "description": "neighbours that vote (1 = precision@1)",
            "type": "integer", "minimum": 1, "default": 1,
        },
        "index": {
            "description": "FAISS index, flat (exact) or approximate ivf / hnsw",
            "enum": ["flat", "ivf", "hnsw"], "default": "flat",
        },
        "freeze_bn": {
            "description": "keep the backbone's BatchNorm statistics and affine weights fixed (frozen BN)",
            "type": "boolean", "default": False,
        },
        "train_tasks": {
            "description": ("all, or first (train on the first task only; later tasks only add their embeddings to the "
                            "index)"),
            "enum": ["all", "first"], "default": "all",
        },
    }
    FACTS: dict[str, Any] = {
        "paper": "Musgrave et al. 2020, ECCV (pytorch-metric-learning losses)",
        "retrieval": True,
        "trains_when_backbone_frozen": True,
    }

    def __init__(self, model: nn.Module, params: dict[str, Any], n_classes: int, **context):
        super().__init__(model, params, n_classes, **context)
        from clgrid.analysis.knn import IndexSpec, KnnClassifier

        p = self.params
        if p["train_tasks"] not in ("all", "first"):
            raise ValueError(f"train_tasks must be 'all' or 'first', got {p['train_tasks']!r}")
        device = next(model.parameters()).device
        skip = p["embedding_skip"] if p["embedding_skip"] == "gated" else bool(p["embedding_skip"])
        self.embedder = EmbeddingHead(model.feature_dim, int(p["embedding_dim"]), bool(p["embedding_bn"]),
                                      skip).to(device)
        self.loss_fn, self.miner = make_loss(p, n_classes, int(p["embedding_dim"]))
        self.loss_fn.to(device)
        for param in model.head.parameters():  # the classifier head is not used: keep it out of the optimizer
            param.requires_grad_(False)
        self.bn_modules = [m for m in model.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if p["freeze_bn"]:  # "frozen BN": running statistics and affine parameters stay as loaded
            for module in self.bn_modules:
                for param in module.parameters():
                    param.requires_grad_(False)
        self.index = KnnClassifier(IndexSpec(distance=p["distance"], kind=p["index"],
                                                use_gpu=device.type == "cuda"), k=int(p["knn_k"]))
        self.tasks_trained = 0

    def approximate_index(self):
        """The k-NN index when it is approximate (ivf, hnsw), so the evaluation can measure its recall against
        exact search; None for the exact (flat) index."""
        return self.index if self.index.spec.kind != "flat" else None

    def extra_parameters(self) -> list[torch.Tensor]:
        return list(self.embedder.parameters()) + list(self.loss_fn.parameters())

    def training_data(self, task: TaskData, load_task: Callable[[int], TaskData]) -> TaskData:
        """The task, in class-balanced batches (``m_per_class``), trained only while ``train_tasks`` says so."""
        m = int(self.params["m_per_class"])
        order = (lambda y, generator: class_balanced_order(y, m, generator)) if m else None
        trains = self.params["train_tasks"] == "all" or self.tasks_trained == 0
        return dataclasses.replace(task, epoch_order=order, trains=trains)

    def train_mode(self) -> None:
        super().train_mode()
        self.embedder.train()
        if self.params["freeze_bn"]:
            for module in self.bn_modules:
                module.eval()

    def _normalise(self, embeddings: torch.Tensor) -> torch.Tensor:
        if self.params["normalize"] or self.params["distance"] == "cosine":
            return nn.functional.normalize(embeddings, dim=1)
        return embeddings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedder(self.model.features(x))

    def loss(self, x: torch.Tensor, y: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """The metric loss in fp32, outside the run's autocast: pytorch-metric-learning casts a loss's learnable
        proxies (ProxyNCA, ArcFace, Sub-center ArcFace) to the embeddings' dtype in place, so bf16 embeddings
        would leave them bf16 for good (Adam then fails, SGD trains them in bf16, fp16 loss scaling refuses
        them). The backbone and the embedding head still run under autocast."""
        embeddings = embeddings.float()
        with torch.autocast(embeddings.device.type, enabled=False):
            if self.miner is not None:
                return self.loss_fn(embeddings, y, self.miner(embeddings, y))
            return self.loss_fn(embeddings, y)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
        was_training = self.model.training, self.embedder.training
        self.model.eval()
        self.embedder.eval()
        # Under the run's precision, so the index's entries (embedded in after_task) and the queries (embedded in
        # predict, under the evaluation's autocast) come from one arithmetic; moved to the model's device in
        # batches (host-placed inputs).
        with self.autocast():
            parts = [self._normalise(self.forward(self.on_compute(x[i : i + batch])).float())
                     for i in range(0, len(x), batch)]
        self.model.train(was_training[0])
        self.embedder.train(was_training[1])
        return torch.cat(parts) if parts else torch.zeros(0, int(self.params["embedding_dim"]))

    def after_task(self, task: TaskData) -> None:
        super().after_task(task)
        if task.trains:
            self.tasks_trained += 1
        self.index.add(self.embed(task.x).cpu(), task.y.cpu())

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.index.scores(self.embed(x).cpu(), self.n_classes)
        return torch.from_numpy(scores).float().to(x.device)

    def state_dict(self) -> dict[str, Any]:
        index = self.index
        return {**super().state_dict(), "embedder": self.embedder.state_dict(), "loss_fn": self.loss_fn.state_dict(),
                "tasks_trained": self.tasks_trained,
                "index_embeddings": None if index.embeddings is None else torch.from_numpy(index.embeddings),
                "index_labels": None if index.labels is None else torch.from_numpy(index.labels)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.embedder.load_state_dict(state["embedder"])
        self.loss_fn.load_state_dict(state["loss_fn"])
        self.tasks_trained = int(state["tasks_trained"])
        self.index.embeddings = self.index.labels = None
        if state["index_embeddings"] is not None:
            self.index.add(state["index_embeddings"], state["index_labels"])
