"""The operator tools, at the top: the ``frameflow`` CLI (:mod:`.cli`), the overview its views read
(:mod:`.overview`), the demo, the soak test and its report, and model fetching (:mod:`.models`)."""
