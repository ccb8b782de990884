"""Suite ``gan``: the DCGAN of notebook 04, unconditional and conditional, each trained on MNIST for a
fixed wall-clock budget, then measured.

    python -m benchmarks.run --suite gan                # 300 s of training each (the issue's budget)
    python -m benchmarks.run --suite gan --fast         # seconds
    python -m benchmarks.run --suite gan --steps 2000   # a fixed number of steps instead of the clock

Training stops after ``seconds`` of wall time, and both learning rates fall linearly to 0 over them
(``course_lib.train.linear_decay``), so the figure is what a learner gets on this machine in that
time. Recorded for each GAN: steps and steps/s; for 1,000 samples (the same z for each) of three
generators in eval mode, 1,000 real test digits beside them as the floor (same reference, same N):
the course classifier's label histogram (every class's share), the fraction of samples it classifies
with p > 0.7, classifier-FID, KID and precision/recall. The three generators (``variants``):

* ``live``: the trained G with the batch-norm running statistics of training;
* ``live_standing``: the same weights with standing statistics (``GAN.standing_statistics``);
* ``ema_standing``: an EMA of G's weights (``GAN_EMA_DECAY``, default 0.999) with standing
  statistics; the EMA's copied running statistics belong to the live weights, so it needs them.

Both plain DCGANs are also scored as ``live_drs``: the live G's samples kept by discriminator
rejection sampling (``course_lib.gan.rejection``; gamma at the ``GAN_DRS_QUANTILE`` quantile,
default 0.95 as in Azadi et al. 2019, over a burn-in of 10 draws per sample; the conditional GAN
draws its labels uniformly and is judged by D(x | y)), with the acceptance rate under ``drs``.

``GAN_SELF_CONDITION=k`` trains the unconditional GAN as a self-conditioned one
(``course_lib.gan.self_conditioned``): the conditional DCGAN on k k-means clusters of the training
pixels, sampled with clusters drawn by their shares; no label is used. ``GAN_ONLY=unconditional``
(or ``conditional``) trains and scores one of the two GANs. ``GAN_INFO=K`` trains the unconditional GAN
as an InfoGAN (``course_lib.gan.infogan``) with a K-way code drawn uniformly; no label is used.
``GAN_AUGMENT=1`` trains both with DiffAugment (``course_lib.gan.augment``: translation and cutout
of every image D sees, real and fake). ``GAN_HINGE=1`` uses the hinge losses for both players and
``GAN_SN=1`` spectral normalisation in D (without its batch norm), SNGAN's recipe (Miyato et al. 2018).
For the conditional GAN at 2,000 steps (one thread) the hinge losses scored 88% and 2.5x (record
20261202T144131) against 87% and 2.1x (record 20261202T072238); with spectral norm too, 62% and 15.3x
(record 20261202T141748): D learns more slowly under it.

The conditional GAN draws labels 0..9 equally often and also records how often the classifier agrees
with the requested label.
"""
from __future__ import annotations

import copy
import os
import time

import torch

LR = 5e-4  # both players, falling linearly to 0 over the budget


def _env_number(name: str, default: str, cast):
    try:
        return cast(os.environ.get(name, default))
    except ValueError:
        raise SystemExit(f"{name}={os.environ[name]!r} must be of type {cast.__name__}, e.g. {name}={default}") from None


EMA_DECAY = _env_number("GAN_EMA_DECAY", "0.999", float)  # an average of G's weights over ~1 / (1 - decay) steps
SELF_CONDITION = _env_number("GAN_SELF_CONDITION", "0", int)  # k > 0: the "unconditional" GAN on k pixel clusters
INFO_CODES = _env_number("GAN_INFO", "0", int)  # K > 0: the unconditional GAN as an InfoGAN with a K-way code
AUGMENT = _env_number("GAN_AUGMENT", "0", int)  # 1: DiffAugment (translation, cutout) for every image D sees
HINGE = _env_number("GAN_HINGE", "0", int)  # 1: hinge losses for D and G instead of minimax / non-saturating
SPECTRAL_NORM = _env_number("GAN_SN", "0", int)  # 1: spectral normalisation in D (DCGAN only)
DRS_QUANTILE = _env_number("GAN_DRS_QUANTILE", "0.95", float)  # gamma of discriminator rejection sampling
if not 0.0 <= DRS_QUANTILE < 1.0:  # refused before training, not after it
    raise SystemExit(f"GAN_DRS_QUANTILE={DRS_QUANTILE} must be a quantile in [0, 1), e.g. GAN_DRS_QUANTILE=0.95")
HEADLINE = "live"  # which generator the targets are read on; every variant is recorded under "variants"


def _budget(args) -> dict:
    if args.fast:  # a 1,000-digit reference keeps the scoring of the tests' tiny runs cheap
        return dict(seconds=None, steps=args.steps or 6, base=8, n_samples=64, n_reference=1000)
    base = 64 if args.device.type == "cuda" else 32  # 32: 0.88M parameters, sized for a CPU
    return dict(seconds=None if args.steps else 300.0, steps=args.steps or 1_000_000, base=base, n_samples=1000,
                n_reference=None)


def _train(args, b: dict, train, conditional: bool):
    from course_lib.gan import build_dcgan, build_infogan
    from course_lib.gan.augment import diff_augment
    from course_lib.gan.rejection import rejection_sample
    from course_lib.gan.self_conditioned import cluster_prior, kmeans
    from course_lib.train import fit, linear_decay

    torch.manual_seed(args.seed)
    num_classes, data, prior = (10, (train.x, train.y), None) if conditional else (None, train.x, None)
    if not conditional and SELF_CONDITION:  # clusters of the pixels stand in for labels (no label is used)
        clusters, _ = kmeans(train.x.flatten(1).float() / 255, SELF_CONDITION, seed=args.seed)
        num_classes, data, prior = SELF_CONDITION, (train.x, clusters), cluster_prior(clusters, SELF_CONDITION)
    if SELF_CONDITION and INFO_CODES:
        raise SystemExit("GAN_SELF_CONDITION and GAN_INFO are two ways to structure the unconditional GAN; set one")
    if SPECTRAL_NORM and INFO_CODES:
        raise SystemExit("GAN_SN applies to the DCGAN's discriminator, not the InfoGAN's; unset GAN_SN or GAN_INFO")
    options = dict(base=b["base"], augment=diff_augment if AUGMENT else None,
                   **(dict(discriminator_loss="hinge", generator_loss="hinge") if HINGE else {}))
    if not conditional and INFO_CODES:
        model = build_infogan(tuple(train.x.shape[1:]), codes=INFO_CODES, **options)
    else:
        model = build_dcgan(tuple(train.x.shape[1:]), num_classes=num_classes, spectral_norm=bool(SPECTRAL_NORM),
                            **options)
    schedule = linear_decay(seconds=b["seconds"]) if b["seconds"] else linear_decay(steps=b["steps"])
    result = fit(model, data, steps=b["steps"], batch_size=64, lr=LR,
                 grad_clip=None, ema_decay=EMA_DECAY, log_every=50, callbacks=[schedule], device=args.device,
                 progress=False, seed=args.seed, amp=args.amp)
    with torch.random.fork_rng():
        torch.manual_seed(args.seed + 3)
        generators = {"live": model.eval(),
                      "live_standing": copy.deepcopy(model).standing_statistics(num_classes),
                      "ema_standing": result.ema.standing_statistics(num_classes)}
    labels = torch.arange(b["n_samples"]) % 10 if conditional else None
    if prior is not None:  # a self-conditioned GAN draws its clusters by their shares of the data
        labels = torch.multinomial(prior, b["n_samples"], replacement=True,
                                   generator=torch.Generator().manual_seed(args.seed + 4))
    chunks = [torch.arange(i, min(i + 250, b["n_samples"])) for i in range(0, b["n_samples"], 250)]
    samples = {}
    for name, gen in generators.items():
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(args.seed + 1)  # the same z for every variant
            samples[name] = torch.cat([gen.postprocess(gen.sample(len(c), None if labels is None else
                                                                  labels[c].to(args.device))).cpu() for c in chunks])
    wanted = {name: labels for name in samples}  # the labels each variant's samples were drawn with
    drs = None
    if not (SELF_CONDITION or INFO_CODES):  # the DCGAN's D(x) or D(x | y), y uniform: rejection sampling applies
        with torch.random.fork_rng():
            torch.manual_seed(args.seed + 5)
            x, drs = rejection_sample(model.eval(), b["n_samples"], num_classes=10 if conditional else None,
                                      gamma_quantile=DRS_QUANTILE, burn_in=10 * b["n_samples"], batch_size=1000)
        y = drs.pop("y")  # the kept samples' labels (None for the unconditional GAN)
        samples["live_drs"], wanted["live_drs"] = model.postprocess(x).cpu(), None if y is None else y.cpu()
    return model, result, samples, wanted, drs


def run(args) -> dict:
    from course_lib import evaluate
    from course_lib.data import load_train_test

    b = _budget(args)
    train, test = load_train_test(args.dataset, holdout=1000)
    perm = torch.randperm(len(test.x), generator=torch.Generator().manual_seed(3))
    n = min(b["n_samples"], len(test.x) // 2)
    held, reference = test.x[perm[:n]], test.x[perm[n:]][:b["n_reference"]]
    classifier = evaluate.load_classifier(device="cpu", dataset=args.dataset)
    f_reference = evaluate.classifier_outputs(reference, "uint8", classifier)[0]  # once, for every scored set

    def scores(images, wanted=None):
        logits = evaluate.classifier_outputs(images, "uint8", classifier)[1]
        p_max, labels = logits.softmax(dim=1).max(dim=1)
        out = {"confident_fraction_p>0.7": float((p_max > 0.7).float().mean()),
               "class_shares": torch.bincount(labels, minlength=10).div(len(labels)).tolist(),
               **{k: v for k, v in evaluate.evaluate_samples(images, real_features=f_reference, value_range="uint8",
                                                            classifier=classifier,
                                                            kid_subset_size=min(1000, n), dataset=args.dataset).items()
                  if k in ("fid", "kid", "precision", "recall", "classes_covered")}}
        out["min_class_share"] = min(out["class_shares"])
        if wanted is not None:
            out["label_accuracy"] = float((labels == wanted).float().mean())
        return out

    floor = scores(held)
    record = {"dataset": args.dataset, "dataset_source": train.source, "n_train": len(train.x),
              "train_seconds_budget": b["seconds"], "lr": f"{LR} for both players, falling linearly to 0 over the budget",
              "ema_decay": EMA_DECAY, "env_overrides": {k: v for k, v in os.environ.items() if k.startswith("GAN_")},
              "real_floor": floor}
    only = os.environ.get("GAN_ONLY")  # "unconditional" or "conditional": train and score one of them (trials)
    if only not in (None, "unconditional", "conditional"):
        raise SystemExit(f"GAN_ONLY must be 'unconditional' or 'conditional', got {only!r}")
    for name, conditional in (("unconditional", False), ("conditional", True)):
        if only not in (None, name):
            continue
        t0 = time.perf_counter()
        model, result, samples, wanted, drs = _train(args, b, train, conditional)
        variants = {name: scores(x, wanted[name] if conditional else None) for name, x in samples.items()}
        s = variants[HEADLINE]
        record[name] = {
            "model": f"{'conditional ' if conditional else ''}DCGAN base {b['base']} "
                     f"{'' if conditional or not SELF_CONDITION else f'self-conditioned on {SELF_CONDITION} k-means clusters of the pixels '}"
                     f"{'' if conditional or not INFO_CODES else f'as an InfoGAN with a {INFO_CODES}-way code '}"
                     f"({sum(p.numel() for p in model.parameters()):,} parameters), "
                     f"{'hinge losses' if HINGE else 'non-saturating loss'}, "
                     f"{'spectral norm in D, ' if SPECTRAL_NORM else ''}k = 1, "
                     f"{'DiffAugment (translation, cutout), ' if AUGMENT else ''}"
                     f"Adam(betas 0.5, 0.999), batch 64; samples from the {HEADLINE!r} generator",
            "steps": result.step, "steps_per_s": result.steps_per_s, "train_wall_time_s": result.wall_time,
            "n_samples": b["n_samples"], "samples": s, "fid_over_floor": s["fid"] / max(floor["fid"], 1e-12),
            "variants": {k: {**v, "fid_over_floor": v["fid"] / max(floor["fid"], 1e-12)} for k, v in variants.items()},
            "drs": drs and {**drs, "gamma_quantile": DRS_QUANTILE},
            "wall_time_s": time.perf_counter() - t0}
    u = record["unconditional" if only != "conditional" else "conditional"]
    record.update(model=u["model"], steps=u["steps"], steps_per_s=u["steps_per_s"], bpd=None,
                  fid=u["samples"]["fid"], kid=u["samples"]["kid"])
    return record
