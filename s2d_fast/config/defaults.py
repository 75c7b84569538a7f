"""Every configuration key of s2d-fast, declared once with what it means.

YAML files override these (`_BASE_` inherits another file) and `KEY VALUE` pairs on the command
line override both. Defaults describe the paper-scale model (TSM-MobileNetV2 synopsis network,
TSM-ResNet-50 detail network at 224); `configs/synthetic/` holds the small CPU recipes.
"""

from fvcore.common.config import CfgNode

_C = CfgNode()

_C.NUM_GPUS = 0  # GPUs to use on this machine; 0 runs on the CPU
_C.EVALUATE = False  # only evaluate TRAIN.RESUME (or the output dir's newest checkpoint), then exit
_C.OUTPUT_DIR = "runs/s2d"  # checkpoints, logs and the merged config of a run go here
_C.RNG_SEED = 0  # seeds python, numpy and torch for model init and data order

_C.TRAIN = CfgNode()
_C.TRAIN.STAGE = "warmup"  # warmup (sampler fixed) | sampling (sampler learns; S2D.SAMPLER_LR_RATIO 0 holds it)
_C.TRAIN.EPOCHS = 30  # passes over the training list
_C.TRAIN.BATCH_SIZE = 8  # videos per batch (see BATCH_SIZE_SCOPE); a step sums ACCUM_STEPS batches
_C.TRAIN.BATCH_SIZE_SCOPE = "all"  # all: BATCH_SIZE sums every process's videos | process: one process's (authors')
_C.TRAIN.OPTIMIZER = "sgd"  # sgd: with MOMENTUM, WEIGHT_DECAY as L2 (TSM's, the authors') | adamw: Adam (MOMENTUM its beta1) with WEIGHT_DECAY decoupled
_C.TRAIN.BASE_LR = 0.01  # learning rate before the schedule (see BASE_LR_SCOPE)
_C.TRAIN.BASE_LR_SCOPE = "batch"  # batch: BASE_LR is the whole batch's rate | video: per video, x global batch (authors')
_C.TRAIN.MOMENTUM = 0.9  # SGD momentum; under adamw, its beta1 (decay of the gradient average)
_C.TRAIN.WEIGHT_DECAY = 5e-4  # weight decay (which parameters: PARAM_GROUPS)
_C.TRAIN.PARAM_GROUPS = "tsm"  # tsm: biases x2 lr, no decay on biases and BN | authors: Linear weights x5, biases x10, conv biases x2, every parameter decays
_C.TRAIN.NEW_FC_LR_RATIO = 5.0  # TSM: a new classifier on a pretrained backbone learns 5x faster
_C.TRAIN.LR_SCHEDULE = "cosine"  # cosine: per iteration down to 0 | authors: per epoch, WARMUP_EPOCHS ramp, cosine to LR_FLOOR
_C.TRAIN.WARMUP_EPOCHS = 0  # authors schedule: epochs of linear ramp from WARMUP_LR to BASE_LR (authors': 5)
_C.TRAIN.WARMUP_LR = 0.0  # authors schedule: the ramp's first rate, in BASE_LR's units (authors': 0.5e-8 per video)
_C.TRAIN.LR_FLOOR = 0.01  # authors schedule: the cosine ends at this fraction of BASE_LR (authors': 0.01)
_C.TRAIN.CLIP_GRAD_NORM = 20.0  # clip the global gradient norm to this; 0 disables
_C.TRAIN.CLIP_GRAD_SCOPE = "all"  # all: one norm over every parameter (authors') | sampler-apart: f_theta's gradient clipped on its own, so its size never shrinks the networks' steps
_C.TRAIN.RESUME = ""  # checkpoint to start from; sampling defaults to this run's warmup checkpoint
_C.TRAIN.AUTO_RESUME = True  # continue from this stage's last checkpoint in OUTPUT_DIR if there is one
_C.TRAIN.CHECKPOINT_PERIOD = 1  # keep an epoch checkpoint every N epochs (besides last and best)
_C.TRAIN.CHECKPOINT_ITERS = 0  # also write the last checkpoint every N iterations; 0: epoch ends only
_C.TRAIN.KEEP_CHECKPOINTS = 3  # epoch checkpoints kept, newest first
_C.TRAIN.DETERMINISTIC = False  # deterministic algorithms: a resumed run matches an uninterrupted one
_C.TRAIN.AMP = "none"  # mixed precision: none | bf16 (CPU or GPU) | fp16 (with a gradient scaler) | auto (bf16 on CPUs with native bf16, else none)
_C.TRAIN.COMPILE = False  # torch.compile the model for training (GPUs only: no faster than eager on the CPU)
_C.TRAIN.COMPILE_MODE = "default"  # torch.compile mode for training
_C.TRAIN.CHANNELS_LAST = False  # channels_last memory format for the convolutions
_C.TRAIN.ACCUM_STEPS = 1  # batches whose gradients are summed per optimiser step
_C.TRAIN.SYNC_BN = False  # synchronise BatchNorm statistics across processes
_C.TRAIN.EVAL_PERIOD = 1  # evaluate on the validation list every N epochs (and after the last); 0: never
_C.TRAIN.LOG_PERIOD = 10  # iterations between logged lines and progress-bar loss updates
_C.TRAIN.VIS_PERIOD = 200  # iterations between TensorBoard pictures of where the sampler looked; 0: never

_C.MIXUP = CfgNode()  # PySlowFast's keys and defaults: a training batch mixed with itself in another order
_C.MIXUP.ENABLE = False  # mix each training batch (mixup or CutMix), the loss weighted between the two videos' labels
_C.MIXUP.ALPHA = 0.8  # mixup: the first video's weight ~ Beta(ALPHA, ALPHA), pixels blended; 0 turns mixup off
_C.MIXUP.CUTMIX_ALPHA = 1.0  # CutMix: the first video's share of the frame ~ Beta(a, a), a box of the other pasted into every frame; 0 turns it off
_C.MIXUP.PROB = 1.0  # probability that a batch is mixed at all
_C.MIXUP.SWITCH_PROB = 0.5  # with both on: probability of CutMix rather than mixup for a batch

_C.TEST = CfgNode()
_C.TEST.BATCH_SIZE = 8  # videos per evaluation batch, per process
_C.TEST.AMP = "auto"  # mixed precision for eval/predict: auto (bf16 on CPUs with native bf16, else none) | none | bf16 | fp16
_C.TEST.COMPILE = "auto"  # torch.compile for eval (weight freezing on CPU): auto (native-bf16 CPUs, large evaluations) | on | off
_C.TEST.COMPILE_MODE = "default"  # torch.compile mode for evaluation
_C.TEST.CHANNELS_LAST = "auto"  # channels_last convolutions for eval/predict: auto (on with native bf16 CPUs) | on | off
_C.TEST.FOLD_BN = True  # fold BatchNorm into the layer before it for eval/predict (same function, one pass less)
_C.TEST.PREDICTIONS = ""  # if set, write per-video predictions (JSON lines) to this file

_C.DIST = CfgNode()
_C.DIST.TIMEOUT = 300  # seconds a collective may wait: a dead rank makes the others fail, not hang
_C.DIST.DEVICE = "auto"  # auto: one GPU per process when NUM_GPUS > 0 | cpu: NUM_GPUS processes on the CPU (gloo)

_C.DATA = CfgNode()
_C.DATA.DATASET = "synthetic"  # registered dataset name: synthetic, kinetics400, mini-kinetics, ...
_C.DATA.ROOT = ""  # folder the list files' paths are relative to; "" uses the dataset's default
_C.DATA.TRAIN_LIST = ""  # list file (`path num_frames label` or `path label` rows) for training; "" = dataset default
_C.DATA.VAL_LIST = ""  # list file for validation, the same form; "" = dataset default
_C.DATA.NUM_CLASS = 0  # number of action classes; 0 takes the dataset's own count
_C.DATA.INPUT_FORMAT = ""  # video (files PyAV decodes) | frames (JPEG folders); "" = dataset default
_C.DATA.NUM_CANDIDATES = 32  # T: candidate frames spread uniformly over each video (CANDIDATES segments)
_C.DATA.CANDIDATES = "segments"  # segments: one frame per equal segment | all: every frame, up to MAX_FRAMES (authors' SAMPLING_RATE 1)
_C.DATA.MAX_FRAMES = 150  # CANDIDATES all: frames kept from the clip's start, T (authors' MAX_FRAME_NUM)
_C.DATA.FRAME_STRIDE = 1  # CANDIDATES all: read every FRAME_STRIDE-th frame (authors' RAW_INPUT_SAMPLING_RATE 2, in their frame extraction)
_C.DATA.SCALE_SIZE = 256  # short side the frames are resized to before cropping
_C.DATA.CROP_SIZE = 224  # side of the square crop handed to the model (detail resolution)
_C.DATA.MEAN = [0.485, 0.456, 0.406]  # per-channel mean for normalisation, on [0, 1] pixels
_C.DATA.STD = [0.229, 0.224, 0.225]  # per-channel std for normalisation, on [0, 1] pixels
_C.DATA.NUM_WORKERS = 2  # DataLoader worker processes per training process
_C.DATA.DECODED_CACHE_MB = 0  # MiB of decoded frames each loading process keeps per split, so later epochs skip decoding (0 = off; PyAV backend)
_C.DATA.CACHE_DIR = "~/.cache/s2d_fast"  # where the built-in dataset is generated on first use
_C.DATA.BACKEND = "auto"  # decoding: auto (DALI where installed; PyAV with DECODED_CACHE_MB) | dali | pyav (DataLoader workers)
_C.DATA.NUM_CLIPS = 1  # evaluation: temporal clips per video, their scores averaged
_C.DATA.NUM_CROPS = 1  # evaluation: spatial crops per clip, 1 (centre) or 3 (ends and centre)
_C.DATA.ON_BAD_SAMPLE = "skip"  # unreadable video or list row: skip (log, replace/score wrong) | error
_C.DATA.FLIP = "auto"  # training flip: auto (the dataset's policy) | on | off
_C.DATA.FLIP_LABEL_MAP = ""  # file of `a b` class pairs swapped by a flip; turns the flip on under auto
_C.DATA.FRAME_TEMPLATE = ""  # frame file names in a folder, e.g. img_{:05d}.jpg; "" = dataset default

_C.SYNTHETIC = CfgNode()
_C.SYNTHETIC.NUM_TRAIN = 800  # training videos of the built-in dataset
_C.SYNTHETIC.NUM_VAL = 200  # validation videos of the built-in dataset
_C.SYNTHETIC.SEED = 0  # generator seed: the same seed writes the same videos
_C.SYNTHETIC.FORMAT = "webm"  # webm (VP9) | mp4 (H.264) | frames (JPEG folders)
_C.SYNTHETIC.TASK = "tiles"  # the generator: tiles (a striped tile shows briefly) | balls (a moving ball lights up with a pattern)
_C.SYNTHETIC.FRAME_SIZE = 128  # side of the square frames; the cue stays 28-32 px whatever it is
_C.SYNTHETIC.NUM_FRAMES = 48  # frames per video (12 fps); the cue shows in 1/6 of them

_C.SNET = CfgNode()
_C.SNET.ARCH = "mobilenetv2"  # synopsis backbone (TSM): a name of the backbone table
_C.SNET.NUM_FRAMES = 8  # T_s: candidates the synopsis network sees, taken uniformly
_C.SNET.INPUT_SIZE = 112  # S_s: side the synopsis frames are resized to
_C.SNET.FRAME_CHOICE = "segments"  # segments: TSN segment centres | linspace: floor((n-1) i/(T_s-1)) (authors' UniformSampler)
_C.SNET.RESIZE = "bilinear"  # bilinear (antialiased) | nearest (authors': legacy nearest, no antialiasing)
_C.SNET.SHIFT_DIV = 8  # 1/SHIFT_DIV of the channels shift each way in time
_C.SNET.DROPOUT = 0.5  # dropout before the synopsis classifier
_C.SNET.PRETRAINED = "none"  # none | imagenet | path to a TSM or s2d-fast checkpoint
_C.SNET.PRETRAINED_STRICT = True  # False: keys that do not fit keep their init, and are logged (authors' SNET_RESUME)
_C.SNET.SHIFT = True  # temporal shift in the residual branches (False: a plain 2-D CNN, TSN)
_C.SNET.PARTIAL_BN = False  # TSM's partial BN: freeze every BN but the first (for pretrained nets)
_C.SNET.TEMPORAL_POOL = False  # TSM's temporal pooling: halve the frames after the first stage

_C.DNET = CfgNode()
_C.DNET.ARCH = "resnet50"  # detail backbone (TSM): a name of the backbone table
_C.DNET.NUM_FRAMES = 8  # K: detail frames sampled from the candidates
_C.DNET.INPUT_SIZE = 224  # S: side of each detail frame
_C.DNET.SHIFT_DIV = 8  # 1/SHIFT_DIV of the channels shift each way in time
_C.DNET.DROPOUT = 0.5  # dropout before the detail classifier
_C.DNET.PRETRAINED = "none"  # none | imagenet | path to a TSM or s2d-fast checkpoint
_C.DNET.PRETRAINED_STRICT = True  # False: keys that do not fit keep their init, and are logged (authors' DNET_RESUME)
_C.DNET.SHIFT = True  # temporal shift in the residual branches (False: a plain 2-D CNN, TSN)
_C.DNET.PARTIAL_BN = False  # TSM's partial BN: freeze every BN but the first (for pretrained nets)
_C.DNET.TEMPORAL_POOL = False  # TSM's temporal pooling: halve the frames after the first stage

_C.S2D = CfgNode()
_C.S2D.DETAIL_SAMPLING = True  # True: the s2dnet model; False: tsm, the uniform baseline (TSM on K uniform frames)
_C.S2D.TOPK = 5  # actions of the synopsis kept in the some-hot mask M
_C.S2D.SYNOPSIS_TARGET = "prob"  # prob: softmax of z_s restricted to M | mask: M itself (authors' SOMEHOT)
_C.S2D.EMBED_DIM = 64  # width of the synopsis embedding broadcast into f_theta
_C.S2D.THETA_CHANNELS = 128  # width of f_theta's 3-D conv stacks
_C.S2D.CONTEXT_DIM = 256  # width of the contextual feature m = f_m([s, g]) (authors' CTX_FEATURE_DIM)
_C.S2D.CONTEXT_DROPOUT = 0.0  # dropout on SNet's pooled vector g before f_m (authors' CVECTOR_DROPOUT 0.5)
_C.S2D.FUSION_STAGES = [3, 4]  # DNet stages (1-4) that m is fused into after; [] disables (authors': layer2,layer3)
_C.S2D.FUSION = "additive"  # additive: identity-started conv plus m | concat_relu: concat, 1x1 conv without bias, ReLU (authors' concat-multilevel-3d)
_C.S2D.CLASSIFIER = "tsm"  # tsm: N(0, 0.001) init, dropout over [pooled, m, s] | authors: default init, dropout over the DNet features only
_C.S2D.TEMPORAL_SAMPLING = True  # f_theta moves the detail frames in time (False: uniform)
_C.S2D.SPATIAL_SAMPLING = True  # f_theta zooms into each detail frame (False: whole frames)
_C.S2D.THETA = "conv3d"  # conv3d: pooled 3-D conv stacks with zero heads | trunk: the authors' shared trunk over every (t, y, x) position
_C.S2D.THETA_HIDDEN = 64  # trunk: channels of its 1x1x1 conv (authors' HIDDEN_DIM)
_C.S2D.TIME_PARAM_INIT_FACTOR = 0.05  # trunk: temporal heads start uniform in +-sqrt(f/fan_in) (authors': 0.05 warmup)
_C.S2D.SPACE_PARAM_INIT_FACTOR = 0.05  # trunk: spatial heads, likewise (authors': 0.05 warmup, 0.01 sampling)
_C.S2D.SPACE_FOLLOW_TIME = False  # trunk: the spatial heads also read the temporal outputs (authors': True)
_C.S2D.SAMPLER_STOP_GRADIENTS = False  # f_theta reads SNet's features detached (authors': True)
_C.S2D.SAMPLER_FP32 = False  # f_theta and the sampler run in float32 under AMP (authors': autocast off)
_C.S2D.THETA_POOL = "avg"  # f_theta's pooling: avg (global) | attention (also reads where it attends)
_C.S2D.SHARED_THETA = False  # one conv stack for time and space instead of one each
_C.S2D.TEMPORAL_METHOD = "gaussian"  # gaussian weights over candidates | linear interpolation
_C.S2D.SPATIAL_METHOD = "gaussian"  # gaussian filter banks | bilinear (grid_sample)
_C.S2D.PREDICT_SIGMA = False  # f_theta also predicts log-sigmas (False: the fixed sigmas below)
_C.S2D.STRIDE_PARAM = "exp"  # stride = identity stride * exp(l) | * 2 sigmoid(l) (bounded)
_C.S2D.PARAMETERISATION = "s2d-fast"  # s2d-fast: identity on TSN's frames, clamped, softmax | authors: centres (n-1)/2, strides n/(K-1) and W/(S-1), Gaussians with the 1e-7 floor
_C.S2D.WARMUP_WINDOW = "whole"  # warmup's fixed spatial sampling: whole frame (identity) | center: the central S pixels at stride 1 (authors') | evidence: comb and windows where SNet's evidence is (EVIDENCE_MAP, EVIDENCE_ZOOM; ours)
_C.S2D.TEMPORAL_STRIDE_RATIO = 1.0  # r_t: initial temporal stride as a fraction of n/K
_C.S2D.TEMPORAL_SIGMA = 0.5  # std of the temporal Gaussian, in candidate frames (authors': 1, MANUAL_T_SIGMA is its square)
_C.S2D.SPATIAL_SIGMA = 0.5  # s2d-fast: blur std = SPATIAL_SIGMA * sqrt(stride^2 - 1) px | authors: the std itself (1, MANUAL_S_SIGMA)
_C.S2D.FAST_PATH = True  # inference reads only the temporal taps that matter, from uint8
_C.S2D.FAST_PATH_EPS = 1e-3  # Gaussian mass the fast path may drop per detail frame
_C.S2D.DNET_LOSS = "masked_nll"  # masked_nll: NLL of the top-k-restricted prediction | ce on z_d (authors')
_C.S2D.DNET_LABEL_SMOOTHING = 0.0  # label smoothing of the detail cross-entropy (authors' DNET_SMOOTH_ALPHA 0.1)
_C.S2D.PREDICTION = "masked"  # masked: the detail distribution within the synopsis' top-k | logits: softmax of z_d (authors' NAIVE_DNET_LOSS)
_C.S2D.SNET_LOSS_WEIGHT = 1.0  # weight of the cross-entropy on the synopsis logits z_s (authors': 0.1)
_C.S2D.SAMPLER_LR_RATIO = 1.0  # sampling stage: f_theta's learning rate over TRAIN.BASE_LR; 0 holds it (the sampler stays at the warmup's placement)
_C.S2D.EVIDENCE_LOSS_WEIGHT = 0.0  # sampling stage: weight of a loss pulling f_theta's placement onto where SNet's class activation map shows its top class (ours; 0: off)
_C.S2D.EVIDENCE_TEMPERATURE = 1.0  # softmax temperature over that map's logits, over SNet's frames and over its positions
_C.S2D.EVIDENCE_ZOOM = 0.0  # the zoom (identity stride over the window's) that loss also pulls each window to; 0: the scale is left to the task loss
_C.S2D.EVIDENCE_MAP = "cam"  # the evidence's map: cam (SNet's class activation map, its h x w cells) | saliency (|gradient x input| of SNet's top class on its input frames; ours)
_C.S2D.EVIDENCE_FRAME = "saliency"  # EVIDENCE_MAP saliency: the comb's frame is the one with the largest saliency peak | saliency-logit: that peak times the softmax over SNet's frames (EVIDENCE_TEMPERATURE) of the top class's per-frame logit (ours)
_C.S2D.SAMPLER_ANCHOR = "identity"  # what f_theta's outputs move the sampler from: identity (uniform whole frames, the paper's) | evidence (where SNet's evidence is, at EVIDENCE_ZOOM; ours)
_C.S2D.SPATIAL_LR_RATIO = 1.0  # sampling stage: extra factor for f_theta's spatial branch
_C.S2D.TEMPORAL_LR_RATIO = 1.0  # sampling stage: extra factor for f_theta's temporal branch
_C.S2D.SNET_LR_RATIO = 1.0  # both stages: SNet's learning rate over TRAIN.BASE_LR (authors' factor on its groups); 0 freezes it
_C.S2D.TRAIN_ONLY_PARAMS = []  # sampling stage: train only parameters whose names start so

_C.KERNELS = CfgNode()
_C.KERNELS.BACKEND = "auto"  # auto (Triton on CUDA, torch on CPU) | triton | torch


# The values a string key may take; the command line's choices are read from here too. Checked by
# `assert_and_infer_cfg`, listed in the configuration reference.
_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_BACKBONES = ("mobilenetv2", "resnet18", "resnet34", "resnet50", "resnet101")  # models/backbones.py's table
CHOICES = {
    "TRAIN.STAGE": ("warmup", "sampling"),
    "TRAIN.OPTIMIZER": ("sgd", "adamw"),
    "TRAIN.AMP": ("none", "bf16", "fp16", "auto"),
    "TRAIN.COMPILE_MODE": _COMPILE_MODES,
    "TEST.AMP": ("auto", "none", "bf16", "fp16"),
    "TEST.COMPILE": ("auto", "on", "off"),  # True / False read as on / off
    "TEST.CHANNELS_LAST": ("auto", "on", "off"),
    "TEST.COMPILE_MODE": _COMPILE_MODES,
    "DATA.BACKEND": ("auto", "dali", "pyav"),
    "DATA.ON_BAD_SAMPLE": ("skip", "error"),
    "DATA.FLIP": ("auto", "on", "off"),
    "SYNTHETIC.FORMAT": ("webm", "mp4", "frames"),
    "SYNTHETIC.TASK": ("tiles", "balls"),
    "SNET.ARCH": _BACKBONES,
    "DNET.ARCH": _BACKBONES,
    "S2D.SYNOPSIS_TARGET": ("prob", "mask"),
    "S2D.THETA_POOL": ("avg", "attention"),
    "S2D.TEMPORAL_METHOD": ("gaussian", "linear"),
    "S2D.SPATIAL_METHOD": ("gaussian", "bilinear"),
    "S2D.STRIDE_PARAM": ("exp", "bounded"),
    "S2D.DNET_LOSS": ("masked_nll", "ce"),
    "KERNELS.BACKEND": ("auto", "triton", "torch"),
    "DIST.DEVICE": ("auto", "cpu"),
    "TRAIN.BATCH_SIZE_SCOPE": ("all", "process"),
    "TRAIN.BASE_LR_SCOPE": ("batch", "video"),
    "TRAIN.CLIP_GRAD_SCOPE": ("all", "sampler-apart"),
    "TRAIN.PARAM_GROUPS": ("tsm", "authors"),
    "TRAIN.LR_SCHEDULE": ("cosine", "authors"),
    "DATA.CANDIDATES": ("segments", "all"),
    "SNET.FRAME_CHOICE": ("segments", "linspace"),
    "SNET.RESIZE": ("bilinear", "nearest"),
    "S2D.FUSION": ("additive", "concat_relu"),
    "S2D.CLASSIFIER": ("tsm", "authors"),
    "S2D.THETA": ("conv3d", "trunk"),
    "S2D.PARAMETERISATION": ("s2d-fast", "authors"),
    "S2D.WARMUP_WINDOW": ("whole", "center", "evidence"),
    "S2D.EVIDENCE_MAP": ("cam", "saliency"),
    "S2D.EVIDENCE_FRAME": ("saliency", "saliency-logit"),
    "S2D.SAMPLER_ANCHOR": ("identity", "evidence"),
    "S2D.PREDICTION": ("masked", "logits"),
}


def get_defaults() -> CfgNode:
    """A fresh copy of the defaults, safe to mutate."""
    return _C.clone()
