"""Typed run configuration. YAML presets and command-line overrides fill these dataclasses; nothing executes code.

Every field has a one-line docstring: jsonargparse shows it in ``sskt train --help``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

AuxLoss = Literal["ce", "kd", "kd_legacy", "focal"]
PrimaryLoss = Literal["ce", "focal", "bce"]
AlphaSchedule = Literal["constant", "warmup", "cosine"]
HeadKind = Literal["linear", "tm"]
BNMode = Literal["eval", "train"]
InputScale = Literal["normalised", "activitynet"]
Precision = Literal["32-true", "32", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true"]
Schedule = Literal["multistep", "cosine", "constant", "fixmatch"]
Augment = Literal["default", "resized_crop", "clip", "none"]
VOCDifficult = Literal["negative", "ignore", "positive"]
CacheDtype = Literal["float16", "float32"]
ProbeSolver = Literal["sgd", "lbfgs"]


@dataclass
class DataConfig:
    """What the target trains and is evaluated on."""

    name: str = "fashion_mnist"
    """Dataset name; `sskt list datasets` shows the choices."""
    root: str | None = None
    """Folder holding the data; None uses $SSKT_DATA, then the dataset's own default location."""
    download: bool = True
    """Let torchvision download a missing public dataset (needs network)."""
    labels_per_class: int | None = None
    """Keep only N labelled training images per class (stratified, chosen by subset_seed); None keeps all."""
    subset_seed: int | None = None
    """Seed choosing the labelled subset; None uses the run seed, so every method sees the same subset."""
    val_per_class: int | None = None
    """Hold out N labelled training images per class, drawn first and never trained on, to choose the best epoch
    (summary 'best', 'selected_by'); None holds out nothing, and the summary then has no 'best'."""
    val_seed: int = 0
    """Seed choosing the validation split; independent of the run seed, so every method and seed share it."""
    augment: Augment = "default"
    """Augmentation preset: 'default' (the dataset's standard: random crop with padding + flip), 'resized_crop'
    (random resized crop, scale 0.08-1, + flip: ImageNet-style, for VOC), 'clip' (multi-scale corner crop + flip
    of every frame alike, for video) or 'none'."""
    clip_len: int = 16
    """ucf101/hmdb51: frames per clip (training draws one window per video and epoch; test scores every
    non-overlapping window)."""
    video_split: int = 1
    """ucf101/hmdb51: the official split (1, 2 or 3)."""
    voc_difficult: VOCDifficult = "negative"
    """voc2007: a class present only through 'difficult' objects is 'negative' (the authors' code), 'ignore' (left
    out of that image's loss and metrics) or 'positive'."""
    crop_padding: int = 4
    """Zero padding in px on every side before the default preset's random crop; 4 is the released code's
    RandomCrop(size, padding=4), for STL10's 96 px images too."""
    skip_bad_images: bool = False
    """Drop image files that do not decode (a folder is scanned before training), with a warning; False refuses
    them, naming the first few."""
    image_size: int | None = None
    """Side length images are resized to on load (imagefolder), or the crop side (voc2007: stored at 8/7 of it,
    224 by default); None keeps the dataset's native size."""
    batch_size: int = 128
    """Training batch size (labelled images per step)."""
    eval_batch_size: int = 1000
    """Batch size for evaluation."""
    num_workers: int = 0
    """DataLoader worker processes for datasets decoded from files; in-memory datasets need none."""
    unlabeled: str | None = None
    """Images for the auxiliary tasks only: 'rest' (training images outside the labelled subset), a dataset split
    such as 'stl10:unlabeled', or a folder of images. None uses labelled images only."""
    unlabeled_ratio: int = 0
    """Unlabelled images per labelled image in a batch."""
    unlabeled_pool: int | None = None
    """'rest' only: keep a fixed subset of this many images, drawn once outside the validation split by a constant
    seed (the same pool for every run seed, method and label budget, less the few images a run labels), e.g. so that
    a slow source's cached views of the pool fit a budget; None keeps every image."""


@dataclass
class ModelConfig:
    """The target network."""

    name: str = "resnet20"
    """Architecture; `sskt list models` shows the choices (timm models as 'timm:<name>')."""
    pretrained: bool = False
    """Initialise from ImageNet weights where the architecture has them (torchvision, timm, efficientnet_lite0)."""


@dataclass
class SourceConfig:
    """One frozen pretrained source network."""

    name: str = "efficientnet_lite0.imagenet"
    """Source name 'arch.weights'; `sskt list sources` shows the choices ('timm:<name>', 'checkpoint:<path>')."""
    weights: str | None = None
    """Local file or URL overriding where the source's weights come from."""
    input_size: int | None = None
    """Resize the target's image to this square size for the source; None keeps the size (or uses resize_factor)."""
    resize_factor: float | None = None
    """Bilinear resize by this factor (the released code's 7/3 for CIFAR/STL10); used when input_size is None."""
    bn_mode: BNMode = "eval"
    """BatchNorm mode of the source: 'eval' (running statistics, the default) or 'train' (the released code)."""
    input_scale: InputScale = "normalised"
    """What the source is fed: 'normalised' (its own mean/std on [0, 1] pixels) or 'activitynet' (0-255 pixels
    minus the ActivityNet mean, no std: the released video code's 2D-source input, faithful presets only)."""
    weight: float = 1.0
    """Per-source factor on its auxiliary loss, on top of the method's alpha."""


@dataclass
class HeadConfig:
    """Auxiliary heads attached to the target, one per source."""

    kind: HeadKind = "linear"
    """'linear' (on the pooled final feature) or 'tm' (transfer module over stage outputs)."""
    width: int | None = None
    """Transfer-module width W; None uses 64 for CIFAR ResNets and 1000 for ImageNet-style backbones."""
    stages: list[int] | None = None
    """Indices of the backbone stages that feed the transfer module; None uses all of them."""


@dataclass
class KDConfig:
    """Knowledge distillation (Hinton et al. 2015)."""

    teacher: str | None = None
    """Teacher source: 'checkpoint:<run dir or file>' of a trained run with the target's label space."""
    temperature: float = 4.0
    """Softmax temperature T."""
    lam: float = 0.9
    """Weight lambda of the distillation term."""
    label_weight: float | None = 1.0
    """Weight of the label loss: 1 is METHOD.md section 9's CE + lambda T^2 KL (the label loss keeps its weight);
    null is Hinton's (1 - lambda) CE + lambda T^2 KL (section 7, the presets that reproduce older results)."""
    legacy: bool = False
    """Use the released code's elementwise-mean KL (kd_legacy) instead of batchmean."""
    teacher_input_size: int | None = None
    """Resize the target's image to this size for the teacher; None keeps the size."""


@dataclass
class DMLConfig:
    """Deep mutual learning (Zhang et al. 2018)."""

    peers: list[str] = field(default_factory=lambda: ["resnet56"])
    """Architectures of the peers besides the target (the paper uses resnet50)."""
    temperature: float = 1.0
    """Softmax temperature of the mutual KL."""
    alternate: bool = True
    """Recompute each updated peer's prediction before the next peer's update (the paper's Algorithm 1); False uses
    the predictions from before the batch. Use False with few steps per epoch at a high lr (docs/OPTIONS.md)."""


@dataclass
class MAXLConfig:
    """Meta auxiliary learning (Liu, Davison, Johns 2019)."""

    psi: int = 10
    """Auxiliary classes per primary class."""
    generator: str | None = None
    """Architecture of the label-generation network; None uses the target's."""
    generator_lr: float = 1e-3
    """SGD learning rate of the label generator."""
    generator_weight_decay: float = 5e-4
    """Weight decay of the label generator."""
    inner_lr: float = 0.01
    """Learning rate of the virtual step in the meta-update."""
    entropy_weight: float = 0.2
    """Weight of the regulariser that spreads generated labels over the auxiliary classes."""
    second_order: bool = True
    """Exact second-order meta-gradient; False uses the first-order finite-difference estimate."""
    two_pass: bool = False
    """Each epoch as the released code: a pass updating the multi-task net, then a pass meta-updating the generator;
    False interleaves both updates on each batch (one read of the data)."""
    mask_floor: float = 0.0
    """Value of the generator's class mask outside the true class's slots: 0 is an exact mask; the released code's
    1e-8 leaks up to 1e-8 * exp(logit gap) of the mass there."""
    inner_lr_follows_schedule: bool = False
    """Scale inner_lr by the multi-task net's learning-rate schedule (the released code passes the current lr);
    False keeps inner_lr constant."""


@dataclass
class SSKTConfig:
    """SSKT (Hong et al. 2022): the weighted auxiliary losses against the sources' soft labels."""

    alpha: float = 1.0
    """Weight of the summed auxiliary losses."""
    temperature: float = 1.0
    """Softmax temperature of the auxiliary loss."""
    aux_loss: AuxLoss = "ce"
    """Auxiliary loss: 'ce', 'kd', 'kd_legacy' (the released code's elementwise mean) or 'focal'."""
    alpha_schedule: AlphaSchedule = "constant"
    """Auxiliary-weight schedule: 'constant', 'warmup' (linear ramp) or 'cosine' (decay to alpha_floor)."""
    alpha_warmup_epochs: int = 0
    """Epochs of the linear ramp for alpha_schedule='warmup'."""
    alpha_floor: float = 0.0
    """Fraction of alpha that the cosine schedule ends at."""


@dataclass
class ProbeConfig:
    """The linear probe on a frozen source's penultimate features (the adapted teacher)."""

    solver: ProbeSolver = "sgd"
    """'sgd': trained by the loop like every method (augmented labelled images, the schedule); 'lbfgs': the standard
    linear-evaluation protocol, multinomial logistic regression on un-augmented features fitted to convergence by
    L-BFGS, its L2 strength chosen on the validation split (needs data.val_per_class and epochs: 1)."""
    l2: list[float] | None = None
    """L2 strengths tried by 'lbfgs' (mean cross-entropy + l2/2 ||W||^2); None: 1e-4 to 10, half a decade apart."""
    feature_cache: bool = True
    """'lbfgs': read the labelled and validation images' features from the feature cache under the cache root
    (cache.dir, $SSKT_CACHE or ~/.cache/sskt: the one ``sskt advise`` fills), computing and storing them there when
    missing, so one forward of the source serves advise and the teacher; and evaluate through a memo of features by
    image content there (``sources.features.FeatureMemo``), so the validation and test images' features are computed
    by the first probe on a source and read by every later one (every seed and label budget of a benchmark); false:
    compute them in the run only."""


@dataclass
class DHOConfig:
    """A DHO-style dual head (Kang et al. 2025): a second linear head learns the KD teacher (method.kd) on every row;
    the prediction fuses both heads with weights chosen on the validation split."""

    alphas: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)])
    """Fusion weights a tried: p = (1 - a) softmax(z_ce) + a softmax(z_kd / beta)."""
    betas: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])
    """Temperatures beta tried on the distilled head."""


@dataclass
class FixMatchConfig:
    """FixMatch (Sohn et al. 2020): a confident weak-view prediction is the hard label of the strong view."""

    threshold: float = 0.95
    """Confidence tau: an unlabelled row counts only where max softmax(f(weak)) >= tau."""
    lambda_u: float = 1.0
    """Weight of the masked unlabelled cross-entropy."""


@dataclass
class StrongViewConfig:
    """The strong view of an unlabelled image that a method may ask for (FixMatch's): crop and flip, RandAugment,
    then Cutout (sskt.data.randaugment); drawn only when the method wants strong views."""

    ops: int = 2
    """RandAugment operations per strong view, drawn from the 14."""
    magnitude_bins: int = 10
    """RandAugment magnitude levels; each operation draws its level uniformly from 1..magnitude_bins."""
    cutout: float = 0.5
    """Side of the Cutout square on the strong view, as a fraction of the image side (0 turns Cutout off)."""


@dataclass
class MethodConfig:
    """The training method and its losses."""

    name: str = "scratch"
    """Method; `sskt list methods` shows the choices."""
    primary_loss: PrimaryLoss = "ce"
    """Primary (label) loss of every method: 'ce' (single-label), 'focal', or 'bce' (multi-label). KD, DML and MAXL
    take 'ce' or 'focal' (MAXL's paper uses 'focal'; its presets set it)."""
    sskt: SSKTConfig = field(default_factory=SSKTConfig)
    """SSKT settings."""
    kd: KDConfig = field(default_factory=KDConfig)
    """KD settings."""
    dml: DMLConfig = field(default_factory=DMLConfig)
    """DML settings."""
    maxl: MAXLConfig = field(default_factory=MAXLConfig)
    """MAXL settings."""
    fixmatch: FixMatchConfig = field(default_factory=FixMatchConfig)
    """FixMatch settings (also for the compositions 'fixmatch+sskt', 'fixmatch+kd')."""
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    """Linear-probe settings (method 'probe')."""
    dho: DHOConfig = field(default_factory=DHOConfig)
    """Dual-head fusion settings (method 'dho' and its compositions; the teacher is method.kd's)."""


@dataclass
class EMAConfig:
    """An exponential moving average of the target's weights, for every method: the average is what is evaluated
    and saved (sskt.methods.ema)."""

    decay: float | None = None
    """Decay d per optimizer step, in [0, 1); 0 turns the average off; None takes the method's default (0.999 with
    FixMatch's term, off otherwise)."""
    warmup: bool = True
    """Use min(d, (1 + t) / (10 + t)) at step t (TensorFlow's num_updates), so the average forgets its random start
    early; records show the decay that ran (ema_decay_effective). False uses d from the first step."""


@dataclass
class OptimConfig:
    """SGD and its learning-rate schedule."""

    lr: float = 0.1
    """Initial learning rate (per batch of data.batch_size images)."""
    momentum: float = 0.9
    """SGD momentum."""
    weight_decay: float = 5e-4
    """L2 weight decay."""
    nesterov: bool = False
    """Nesterov momentum."""
    schedule: Schedule = "multistep"
    """'multistep', 'cosine', 'constant' or 'fixmatch' (cos(7 pi e / 16 E), FixMatch's slow cosine)."""
    milestones: list[int] = field(default_factory=lambda: [150, 250])
    """Epochs at which 'multistep' multiplies the learning rate by gamma."""
    gamma: float = 0.1
    """Multistep decay factor."""
    warmup_epochs: int = 0
    """Linear learning-rate warm-up epochs before the schedule."""


@dataclass
class CacheConfig:
    """Exact soft-label cache: stored augmentation views and the sources' logits for them."""

    enabled: bool = False
    """Replay stored views and their cached source logits instead of running the sources online."""
    build: bool = True
    """Build the cache on first use when it is missing (else fail)."""
    views: int = 8
    """Augmented views K stored per training image."""
    dir: str | None = None
    """Cache folder; None uses $SSKT_CACHE, then ~/.cache/sskt."""
    topk: int | None = None
    """Store only the top-k logits per view (plus the remaining mass); None keeps all classes. Exact only at
    method.sskt.temperature 1, so refused otherwise."""
    dtype: CacheDtype = "float16"
    """Stored logit precision: 'float16' (half the disk and memory) or 'float32' (bit-exact fp32 logits)."""


@dataclass
class TrainConfig:
    """One training run."""

    seed: int = 0
    """Seed for initialisation, data order, augmentation and the labelled subset."""
    epochs: int = 30
    """Training epochs."""
    out: str = "runs/default"
    """Run directory (config.yaml, records.jsonl, summary.json, checkpoints/)."""
    resume: bool = False
    """Continue from the last checkpoint in the run directory."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Target network."""
    sources: list[SourceConfig] = field(default_factory=list)
    """Frozen source networks (SSKT)."""
    head: HeadConfig = field(default_factory=HeadConfig)
    """Auxiliary heads."""
    method: MethodConfig = field(default_factory=MethodConfig)
    """Training method."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and schedule."""
    cache: CacheConfig = field(default_factory=CacheConfig)
    """Soft-label cache."""
    ema: EMAConfig = field(default_factory=EMAConfig)
    """Average of the target's weights (any method)."""
    strong_views: StrongViewConfig = field(default_factory=StrongViewConfig)
    """Strong views of the unlabelled images (any method that asks for them)."""
    accelerator: str = "auto"
    """Fabric accelerator: 'auto', 'cpu', 'cuda', 'mps'."""
    devices: int = 1
    """Devices per node."""
    num_nodes: int = 1
    """Nodes."""
    strategy: str = "auto"
    """Fabric strategy ('auto', 'ddp'). With several processes each takes rows [rank::world] of every global batch
    of data.batch_size rows; scale optim.lr with the global batch, not with the number of processes."""
    dist_timeout: float = 600.0
    """With several processes, seconds a process waits for the others at a collective before the run stops, naming
    the silent one (torch's default is 30 minutes); a soft-label cache built by rank 0 is waited for a day."""
    sync_batchnorm: bool = False
    """With several processes, compute BatchNorm statistics over the global batch (SyncBatchNorm; CUDA only in
    PyTorch); False normalises each process's rows with their own statistics."""
    precision: Precision = "32-true"
    """Fabric precision ('32-true', 'bf16-mixed', '16-mixed')."""
    channels_last: bool = False
    """Use channels-last memory format for target and sources."""
    source_chunk: int | None = None
    """Images per source forward (online and cache build): None picks 32 on CPU (faster per image there) and the
    whole batch on GPU; 0 always uses the whole batch."""
    eval_every: int = 1
    """Evaluate every N epochs (and always after the last)."""
    precise_bn: int = 0
    """Before each evaluation, recompute BatchNorm running statistics over this many training batches of the current
    weights (0 keeps the moving averages). Fixes statistics that lag fast-moving weights; applies to every method."""
    progress: bool = True
    """Show a progress bar."""
    threads: int | None = None
    """CPU threads for torch; None leaves torch's default."""
    loggers: list[str] = field(default_factory=lambda: ["tensorboard", "csv"])
    """Trackers of the per-epoch metrics: 'tensorboard' (tb/), 'csv' (metrics.csv), 'wandb', 'mlflow' (extras)."""
