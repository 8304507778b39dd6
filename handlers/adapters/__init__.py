"""Azure, as the toolkit calls it: clients, pacing, Resource Graph, VM power, snapshots, the
cancel request, and running many long-running operations at once."""
