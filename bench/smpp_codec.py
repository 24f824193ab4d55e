"""Benchmark the SMPP PDU codec: encode + decode round trips per second.

Usage: python bench/smpp_codec.py [--count N] [--rounds R]

Each round encodes and decodes N PDUs, alternating a submit_sm (SAR TLVs) and a deliver_sm
delivery receipt (receipted_message_id, message_state and a vendor TLV), and checks the
last round trip. The best round is reported, as one line:

    smpp_codec: <rate> PDU encode+decode/s (...; cpu <rate>/s)

The first rate is from wall-clock time; the cpu one from this process's CPU time, which
stays meaningful when other processes compete for the machine's cores.
"""

from __future__ import annotations

import argparse
import platform
import time

from junebug.transports.smpp.pdu import decode, encode, make_pdu


def sample_pdus() -> list:
    """Return the PDUs the benchmark cycles through."""
    submit = make_pdu(
        "submit_sm",
        1234,
        source_addr_ton=5,
        source_addr="Junebug",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="27831234567",
        registered_delivery=1,
        short_message=b"Hello from Junebug, this is a typical single part message.",
        tlvs={"sar_msg_ref_num": 42, "sar_total_segments": 2, "sar_segment_seqnum": 1},
    )
    deliver = make_pdu(
        "deliver_sm",
        99,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="27831234567",
        destination_addr="12345",
        esm_class=0x04,
        short_message=(
            b"id:0123456789 sub:001 dlvrd:001 submit date:2401011200 "
            b"done date:2401011201 stat:DELIVRD err:000 text:Hello"
        ),
        tlvs={"receipted_message_id": "0123456789", "message_state": 2, 0x1401: b"\x01\x02"},
    )
    return [submit, deliver]


def run_round(pdus: list, count: int) -> tuple[float, float]:
    """Encode and decode ``count`` PDUs; return the elapsed wall and CPU seconds."""
    n = len(pdus)
    started, started_cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        result = decode(encode(pdus[i % n]))
    elapsed, elapsed_cpu = time.perf_counter() - started, time.process_time() - started_cpu
    if result != pdus[(count - 1) % n]:
        raise SystemExit("round trip mismatch")
    return elapsed, elapsed_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000, help="PDUs per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best is reported")
    args = parser.parse_args()
    pdus = sample_pdus()
    sizes = "/".join(str(len(encode(p))) for p in pdus)
    rounds = [run_round(pdus, args.count) for _ in range(args.rounds)]
    rate = args.count / min(wall for wall, _cpu in rounds)
    cpu_rate = args.count / min(cpu for _wall, cpu in rounds)
    print(
        f"smpp_codec: {rate:,.0f} PDU encode+decode/s "
        f"(submit_sm/deliver_sm of {sizes} bytes, best of {args.rounds} x {args.count}, "
        f"{platform.python_implementation()} {platform.python_version()}; "
        f"cpu {cpu_rate:,.0f}/s)"
    )


if __name__ == "__main__":
    main()
