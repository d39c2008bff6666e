"""Benchmarks: attention kernels across lengths, and whole-model training throughput and MFU."""
