"""The cases, one module per row group of the issue's table; each has `measure(bench) -> list[Result]`."""
