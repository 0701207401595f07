"""The Typecase server.

gRPC's fork handlers are turned off here, before anything imports grpc (an explicit GRPC_ENABLE_FORK_SUPPORT
wins). With them on, grpcio (1.81 and later: grpc/grpc#43055) restarts its poller thread in every forked child
before the child execs, and that thread can crash: of 1,000 children started while gRPC calls were being served
(uvloop, grpcio 1.85), 195 died of SIGSEGV or SIGABRT before running anything; with the handlers off, none did.
A code node whose sandbox died so failed in 0.04 s ("exit status -11"). The server only forks to exec (the code
sandbox, worker pools, `serve --workers`), the one case where gRPC needs nothing done at fork.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
