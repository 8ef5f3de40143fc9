from frappe.model.document import Document


class CeleryExampleItem(Document):
	pass
