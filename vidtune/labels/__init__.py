"""Labels: choosing what to label, catching wrong labels, and exchanging labels with other tools."""
