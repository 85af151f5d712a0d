"""Venue drivers behind one interface (``base.Venue``): IG and Trade Republic, selectors in one place each."""
