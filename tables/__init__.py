"""edgewise.tables"""
