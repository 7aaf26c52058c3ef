"""Generation engines: vLLM worker extensions (and, later, the interpolated engines)."""
