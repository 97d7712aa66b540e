"""tpo.kernels"""
