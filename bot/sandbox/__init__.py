"""Local stand-ins for the platforms: fake servers and traffic for tests, demos, benchmarks."""
