"""tpo.train"""
