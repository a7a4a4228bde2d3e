"""Training loops of both stages (Lightning): the teacher head on cached features and the student."""
