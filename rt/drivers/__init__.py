"""Instrument drivers behind the rt.hal Protocols, composed from `[devices]` by rt/devices.py.

visa.py: the declarative `control(...)` helper and the VISA base class; microwave_visa.py (SCPI signal
generator), piezo_visa.py (PI GCS piezo controller), swabian_tagger.py (Swabian Time Tagger). sim/:
pyvisa-sim instrument files for tests without hardware. Nothing here is imported unless configured:
import the module you need (pyvisa and the TimeTagger API load only when an instrument is opened).
"""
