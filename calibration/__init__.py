"""tpo.calibration"""
