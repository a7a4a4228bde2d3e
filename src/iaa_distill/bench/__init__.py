"""`iaa bench`: measures every speed goal of the project on this machine and prints figures and ratios."""
