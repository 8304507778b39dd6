"""The phases of a run as lists of steps (`pre`, `post`), the loop that runs them (`steps`), the
claimed run of a work message (`claims`) and the hook every end of a phase goes through
(`run_end`)."""
