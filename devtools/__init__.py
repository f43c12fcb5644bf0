"""Developer and operator tooling outside the product: the end-to-end demo and the reliability
suite runner. Product packages never import it; it may import them (and runs the tests/ suite
by path, never by import)."""
