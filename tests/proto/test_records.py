"""The table row of a stored message kind follows its declaration in proto/messages.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar

import numpy as np
import pytest

from nvscope.proto.messages import Array, Coherence, Deer, Lock, Notice, Pixel
from nvscope.proto.records import record_fields


def test_pixel_and_coherence_rows_are_the_documented_layout():
    assert record_fields(Pixel) == {
        "seq": ("<i8", ()), "index": ("<i8", ()), "ix": ("<i8", ()), "iy": ("<i8", ()),
        "position": ("<f8", (3,)), "dwell_s": ("<f8", ()), "n_a": ("<i8", ()), "n_b": ("<i8", ()),
        "n_events": ("<i8", ()), "hist": ("<i8", (215,)), "lost_tags": ("<i8", ()),
        "histogram_mode": ("|S256", ()), "tac_dead_s": ("<f8", ()), "n_starts": ("<i8", ()),
    }
    assert record_fields(Coherence) == {
        "seq": ("<i8", ()), "n_pulses": ("<i8", ()), "t": ("<f8", (-1,)), "coherence": ("<f8", (-1,)),
        "sigma": ("<f8", (-1,)), "repetitions": ("<i8", ()), "pi_s": ("<f8", ()), "pi_half_s": ("<f8", ()),
        "signal_counts": ("<f8", (-1,)), "bright_counts": ("<f8", (-1,)), "dark_counts": ("<f8", (-1,)),
        "dark_repetitions": ("<i8", ()),
    }
    assert record_fields(Lock)["state"] == ("<i8", ()) and record_fields(Lock)["f_sigma_hz"] == ("<f8", ())
    assert record_fields(Deer)["n_rf"] == ("<i8", ()) and record_fields(Deer)["position"] == ("<f8", (3,))


@dataclass(frozen=True)
class _Wider(Pixel):
    kind: ClassVar[str] = "wider"
    temperature_k: float = 0.0
    counts: Annotated[np.ndarray, Array("u2", (2, 3))] = field(default_factory=lambda: np.zeros((2, 3), "u2"))


def test_a_new_field_becomes_a_column_in_declaration_order():
    cols = record_fields(_Wider)
    assert list(cols)[:len(record_fields(Pixel))] == list(record_fields(Pixel))
    assert cols["temperature_k"] == ("<f8", ()) and cols["counts"] == ("<u2", (2, 3))
    assert "run_id" not in cols


@dataclass(frozen=True)
class _Named(Pixel):
    label: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _IntTrace(Pixel):
    trace: Annotated[np.ndarray, Array("<i8", (-1,))] = field(default_factory=lambda: np.zeros(0, "<i8"))


def test_text_fields_are_utf8_columns_of_fixed_width():
    assert record_fields(Notice)["text"] == ("|S256", ())


def test_fields_without_a_column_type_are_refused_by_name():
    with pytest.raises(TypeError, match="_Named.label: a dict field has no column type"):
        record_fields(_Named)
    with pytest.raises(TypeError, match="_IntTrace.trace: .* cannot be a NaN-padded row"):
        record_fields(_IntTrace)
