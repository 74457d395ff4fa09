"""edgewise.app"""
