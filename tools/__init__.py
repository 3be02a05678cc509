"""Build tools outside the runtime package (the embedded demo model's builder).
"""
