"""Normalizing flows (notebook 05): invertible layers with ``forward(x) -> (z, log_det)`` and
``inverse(z)``, the multi-scale image flow, the 2D RealNVP, dequantisation and the model.

Modules: ``layers`` (AffineCoupling, ActNorm, Invertible1x1Conv, Squeeze, FlowSequence, masks),
``dequantization`` (uniform dequantisation, LogitTransform, the bits/dim convention), ``multiscale``
(MultiScaleFlow), ``variational`` (VariationalDequantizer: a learned q(u | x)), ``toy2d`` (RealNVP2D), ``model`` (FlowModel, ``build_flow``: zoo name ``realnvp``).
"""
from course_lib.flows.dequantization import BPD_CONVENTION, LogitTransform, uniform_dequantize
from course_lib.flows.layers import (
                                     ActNorm,
                                     AffineCoupling,
                                     FlowSequence,
                                     Invertible1x1Conv,
                                     Squeeze,
                                     channel_mask,
                                     checkerboard_mask,
)
from course_lib.flows.model import FlowModel, build_flow
from course_lib.flows.multiscale import ConvNet, MultiScaleFlow, standard_normal_log_prob
from course_lib.flows.toy2d import RealNVP2D
from course_lib.flows.variational import VariationalDequantizer

__all__ = [
                                     "BPD_CONVENTION",
                                     "ActNorm",
                                     "AffineCoupling",
                                     "ConvNet",
                                     "FlowModel",
                                     "FlowSequence",
                                     "Invertible1x1Conv",
                                     "LogitTransform",
                                     "MultiScaleFlow",
                                     "RealNVP2D",
                                     "Squeeze",
                                     "build_flow",
                                     "channel_mask",
                                     "checkerboard_mask",
                                     "standard_normal_log_prob",
                                     "uniform_dequantize",
                                     "VariationalDequantizer",
]
