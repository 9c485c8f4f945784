"""taxonc.compiler.interop: how taxonc models line up with other libraries' checkpoints."""
