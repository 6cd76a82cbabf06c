"""Synthetic training faces the sources lack: masks drawn on bare faces the ways people wear
them (placed from face landmarks), and bare faces with something else in front of them."""
