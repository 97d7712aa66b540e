"""tpo.export"""
