"""Runs llama.cpp's HTTP server in-process via the `xllamacpp` wheel (DESIGN §6).

Started by `cargo xtask llms up`; SIGTERM stops it.
"""
import argparse
import signal
import sys
import time

import xllamacpp

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--alias", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--ctx", type=int, default=4096)
a = ap.parse_args()

params = xllamacpp.CommonParams()
params.model.path = a.model
params.n_ctx = a.ctx
params.cpuparams.n_threads = a.threads
params.cpuparams_batch.n_threads = a.threads
params.hostnames = ["127.0.0.1"]
params.port = a.port
params.model_alias = {a.alias}
server = xllamacpp.Server(params)

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(3600)
