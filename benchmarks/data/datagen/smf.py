"""A minimal Standard MIDI File (format 0) writer.

Only what the recipes need to drive fluidsynth: program and bank changes, control changes,
note on/off and a fixed tempo. Writing these few bytes ourselves keeps the recipe free of a MIDI
dependency and makes the file contents fully explicit (and byte-for-byte deterministic).
Reference: "Standard MIDI-File Format Spec. 1.1" (MIDI Manufacturers Association).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# 480 ticks per quarter note at 120 bpm (500,000 us per quarter): one tick is 1/960 s, so
# event times in seconds round to ticks with ~1 ms resolution.
TICKS_PER_QUARTER = 480
MICROSECONDS_PER_QUARTER = 500_000
TICKS_PER_SECOND = TICKS_PER_QUARTER * 1_000_000 // MICROSECONDS_PER_QUARTER

CC_BANK_SELECT_MSB = 0
CC_ALL_SOUND_OFF = 120
CC_RESET_ALL_CONTROLLERS = 121


def _varlen(value: int) -> bytes:
    """Encode a non-negative integer as a MIDI variable-length quantity (7 bits per byte)."""
    if value < 0:
        raise ValueError(f"variable-length quantity must be >= 0, got {value}")
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _check_7bit(name: str, value: int) -> None:
    if not 0 <= value <= 127:
        raise ValueError(f"{name} must be in 0..127, got {value}")


@dataclass
class MidiTrack:
    """Channel events placed at absolute times in seconds; sorted stably on write.

    Events at the same tick keep the order in which they were added, so a program change
    added before a note-on at the same time is sent first.
    """

    events: list[tuple[int, int, bytes]] = field(default_factory=list)

    def _add(self, time_s: float, kind: int, channel: int, *data: int) -> None:
        if time_s < 0:
            raise ValueError(f"event time must be >= 0 s, got {time_s}")
        if not 0 <= channel <= 15:
            raise ValueError(f"channel must be in 0..15, got {channel}")
        tick = round(time_s * TICKS_PER_SECOND)
        self.events.append((tick, len(self.events), bytes([kind | channel, *data])))

    def program(self, time_s: float, *, channel: int, program: int, bank: int | None = None) -> None:
        """Select ``program`` (0-based) on ``channel`` (0-based), optionally after a bank select."""
        _check_7bit("program", program)
        if bank is not None:
            _check_7bit("bank", bank)
            self.control(time_s, channel=channel, controller=CC_BANK_SELECT_MSB, value=bank)
        self._add(time_s, 0xC0, channel, program)

    def control(self, time_s: float, *, channel: int, controller: int, value: int) -> None:
        _check_7bit("controller", controller)
        _check_7bit("value", value)
        self._add(time_s, 0xB0, channel, controller, value)

    def note(self, time_s: float, *, channel: int, key: int, velocity: int, duration_s: float) -> None:
        """Note-on at ``time_s`` and its note-off ``duration_s`` later."""
        _check_7bit("key", key)
        if not 1 <= velocity <= 127:
            raise ValueError(f"velocity must be in 1..127, got {velocity}")
        if duration_s <= 0:
            raise ValueError(f"duration must be > 0 s, got {duration_s}")
        self._add(time_s, 0x90, channel, key, velocity)
        self._add(time_s + duration_s, 0x80, channel, key, 0)

    def silence(self, time_s: float, *, channel: int) -> None:
        """Cut every sounding voice on ``channel`` at once (All Sound Off, then reset controllers)."""
        self.control(time_s, channel=channel, controller=CC_ALL_SOUND_OFF, value=0)
        self.control(time_s, channel=channel, controller=CC_RESET_ALL_CONTROLLERS, value=0)

    def to_bytes(self) -> bytes:
        """The complete format-0 file: header chunk and one track chunk."""
        body = bytearray()
        # Tempo meta event first, at tick 0.
        body += _varlen(0) + b"\xff\x51\x03" + MICROSECONDS_PER_QUARTER.to_bytes(3, "big")
        now = 0
        for tick, _, message in sorted(self.events):
            body += _varlen(tick - now) + message
            now = tick
        body += _varlen(0) + b"\xff\x2f\x00"  # end of track
        header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_QUARTER)
        return header + b"MTrk" + struct.pack(">I", len(body)) + bytes(body)
