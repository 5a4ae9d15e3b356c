"""The field CSV and the submission CSV: one row type, one writer, one reader, for every command.

`Row` is what every output holds for one classified file: predict and watch write it, events,
convert, adapt, evaluate and the watch journal's rebuild read it back. `Layout` turns rows into
cells (field: path, captured, label, probability, [is_blank,] <classes>, status, error, model;
submission: id, <classes>), `read_predictions` turns cells back into rows, `CsvAppender` is the
append-only file that doubles as predict's resume file. A new kind of row (a video clip, a
detection box) is a new optional field of `Row` and its columns in `Layout` and `Columns`, never
a second writer or reader.
"""
