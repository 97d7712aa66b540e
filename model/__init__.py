"""tpo.model"""
