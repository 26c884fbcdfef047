"""Platform adapters: one module per platform, all behind ``PlatformAdapter``."""
