"""tpo.runtime"""
