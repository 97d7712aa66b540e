"""tpo.bench"""
